"""A text classifier as TensorFlow's "Text classification with an RNN" tutorial builds it, with flows.

The model reads raw strings: a ``TextVectorization``, an ``Embedding(mask_zero=True)``, a
``Bidirectional(LSTM)``, a dense head and one logit. The callback takes the held-out texts as they
are, and its LRP flows run back through the LSTM to the embedding (Arras et al. 2017's rules,
docs/method.md). After training, the script asks which word each review's relevance points at:
the relevance at the embedding's output, summed over its features, is one number per token.

Usage::

    python examples/text_rnn.py                              # generated reviews (below), 4 epochs
    python examples/text_rnn.py --data reviews.tsv           # your own: one "label<TAB>text" per line
    python examples/text_rnn.py --epochs 6 --log-dir flows/text

The generated reviews stand in for IMDB (nothing is downloaded): short sentences of neutral words
with one word that decides the class ("great", "superb"... or "awful", "dull"...) somewhere in
them, padded differently from batch to batch. A model that has learned the task points its relevance
at that word; the script prints how often it does, and the layer from which the classes separate.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

NEUTRAL = ("the", "a", "movie", "film", "plot", "actor", "scene", "was", "and", "story", "ending", "music", "it",
           "cast", "director", "this", "of", "with", "very", "quite")
CUES = {1: ("great", "superb", "wonderful", "moving"), 0: ("awful", "dull", "boring", "terrible")}


def generated_reviews(n: int, seed: int = 0):
    """``(texts, labels, cue words)``: ``n`` reviews of 3 to 24 neutral words with one cue word of
    their class (0 negative, 1 positive) at a random place."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    texts, cues = [], []
    for label in labels:
        words = list(rng.choice(NEUTRAL, size=int(rng.integers(3, 25))))
        cue = str(rng.choice(CUES[int(label)]))
        words.insert(int(rng.integers(0, len(words) + 1)), cue)
        texts.append(" ".join(words))
        cues.append(cue)
    return np.array(texts), labels.astype("int64"), cues


def read_reviews(path):
    """``(texts, labels, None)`` from a file of ``label<TAB>text`` lines (labels 0 or 1)."""
    texts, labels = [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            label, _, text = line.partition("\t")
            texts.append(text)
            labels.append(int(label))
    return np.array(texts), np.array(labels, dtype="int64"), None


def build(train_texts, max_tokens: int = 1000):
    """The tutorial's model (https://www.tensorflow.org/text/tutorials/text_classification_rnn)."""
    import tensorflow as tf

    layers = tf.keras.layers
    encoder = layers.TextVectorization(max_tokens=max_tokens)
    encoder.adapt(train_texts)
    model = tf.keras.Sequential([
        encoder,
        layers.Embedding(len(encoder.get_vocabulary()), 32, mask_zero=True),
        layers.Bidirectional(layers.LSTM(32)),
        layers.Dense(32, activation="relu"),
        layers.Dense(1),
    ])
    model.compile(loss=tf.keras.losses.BinaryCrossentropy(from_logits=True), optimizer=tf.keras.optimizers.Adam(1e-2),
                  metrics=["accuracy"])
    return model, encoder


def most_relevant_words(model, encoder, texts):
    """Each text's word with the most LRP relevance for its predicted class (at the embedding's
    output, summed over its features).

    The model has one logit: relevance is that of the logit, and sums to it, so a negative review
    (a negative logit) gets its evidence as negative relevance. The word that most supports the
    prediction has the largest relevance of the logit's sign."""
    import flowcallback

    embedding = model.layers[1].name
    maps = flowcallback.relevance(model, list(texts), layers=[embedding], backend="native")[embedding]
    per_token = maps.sum(axis=-1)  # (texts, tokens): padding gets none
    toward = np.sign(per_token.sum(axis=1, keepdims=True))  # the logit's sign: the predicted class
    ids = np.asarray(encoder(np.asarray(texts)))
    vocabulary = encoder.get_vocabulary()
    return [str(vocabulary[ids[i, int(np.argmax(toward[i] * per_token[i, :ids.shape[1]]))]])
            for i in range(len(texts))]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="a file of 'label<TAB>text' lines (default: generated reviews)")
    p.add_argument("--samples", type=int, default=1200, help="generated reviews, when --data is not given")
    p.add_argument("--held-out", type=int, default=300, help="reviews held out for the flows")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--log-dir", default="flows/text_rnn")
    args = p.parse_args(argv)

    import tensorflow as tf

    from flowcallback import FlowCallback, load_run

    tf.keras.utils.set_random_seed(0)
    texts, labels, cues = read_reviews(args.data) if args.data else generated_reviews(args.samples)
    n_train = len(texts) - args.held_out
    model, encoder = build(texts[:n_train])
    train = tf.data.Dataset.from_tensor_slices((texts[:n_train], labels[:n_train])).shuffle(n_train, seed=0).batch(32)
    held_out = (list(texts[n_train:]), labels[n_train:])  # the texts as they are
    callback = FlowCallback(held_out, log_dir=args.log_dir, class_names=["negative", "positive"],
                            epochs=list(range(args.epochs + 1)), verbose=1)
    model.fit(train, epochs=args.epochs, verbose=2, callbacks=[callback], shuffle=False)  # the dataset shuffles

    run = load_run(args.log_dir)
    last = run.epochs[-1]
    profiles = run.class_profiles(last)
    print(f"\nRun page: {Path(args.log_dir) / 'index.html'}  (analyses: {', '.join(run.analyses(last))})")
    for row in profiles.itertuples():
        print(f"  {row.class_name}: {row.status}")
    words = most_relevant_words(model, encoder, texts[n_train:])
    result = {"epochs": run.epochs, "analyses": run.analyses(last), "profiles": dict(zip(profiles.class_name,
                                                                                         profiles.status))}
    for text, word in list(zip(texts[n_train:], words))[:5]:
        print(f"  most relevant word {word!r:12} in: {text}")
    if cues is not None:
        hits = float(np.mean([w == c for w, c in zip(words, cues[n_train:])]))
        print(f"The relevance points at the review's cue word in {hits:.0%} of the {len(words)} held-out reviews.")
        result["cue_share"] = hits
    return result


if __name__ == "__main__":
    main()
