"""A snapshot of keras.applications networks against the cost of one gradient pass (issue 18).

    python benchmarks/real_models.py                          # ResNet50, MobileNetV2, EfficientNetB0, DenseNet121
    python benchmarks/real_models.py --models ResNet50 --all-layers --pages 10
    python benchmarks/real_models.py --models BiLSTM --samples 500 --batch-size 128   # the keras.io text classifier
    python benchmarks/real_models.py --models Transformer --samples 500 --batch-size 128   # keras.io's Transformer
    options: --samples N (default 1000), --batch-size B (256), --repeat R (2), --out results/NAME.json

Each model is built with ``weights=None`` for 32 x 32 x 3 inputs and 10 classes, and the held-out set is
scikit-learn's digits resized to 32 x 32 x 3 (values 0-255), so that nothing is downloaded. ``BiLSTM``
is the keras.io "Bidirectional LSTM on IMDB" classifier (200 token ids from a vocabulary of 20,000,
an Embedding of 128, two Bidirectional LSTM(64), a sigmoid unit), on generated sequences whose class
is a keyword token placed in them; its gradient pass is taken with respect to the embedding (token
ids have no gradient). ``Transformer`` is keras.io's "Text classification with Transformer", its
``TokenAndPositionEmbedding`` and ``TransformerBlock`` custom layer classes as the tutorial writes
them (embedding 32, 2 heads, feed-forward 32), on the same sequences. Per model, in the same process:

* the **gradient pass**: one ``tf.GradientTape`` gradient of the top logit with respect to the input,
  eagerly, over the same held-out set and batch size (the baseline: one forward and one backward pass);
* the **snapshot**, taken by the runner the callback uses (``flowcallback.pipeline.Snapshotter``,
  synchronous, native LRP, the callback's defaults otherwise) and timed by its own stage hooks:
  capture, LRP, clustering (kNN + MCL), projection, store, render and the whole snapshot; the
  first snapshot (which builds the relevance engine's state) and the median of the next ``--repeat``;
* R = snapshot / gradient pass, and LRP / gradient pass (the LRP stage: the relevance pass and the
  embedding of its maps);
* the relevance pass alone (``NativeLRP.compiled``, as the callback runs it, after its check against
  the eager pass; and the eager pass, timed on one batch), against the gradient pass;
* the sizes of the epoch page and of the run page (``--pages N``: the run page after N snapshots).

``--all-layers`` also times a snapshot with ``layers="all"``; ``--fit`` times one epoch of ``model.fit`` on
300 images without and with the callback at its defaults (issue 18's table). The figures are printed as a table and
written to benchmarks/results/real_models.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from _common import peak_rss_mb, write_json

MODELS = ("ResNet50", "MobileNetV2", "EfficientNetB0", "DenseNet121")
TEXT_MODELS = ("BiLSTM", "Transformer")
TEXT_STEPS, TEXT_VOCABULARY = 200, 20_000
STAGES = ("capture", "lrp", "cluster", "projection", "metrics", "store", "render")


def held_out(n: int):
    """scikit-learn's digits (1,797 images) resized to 32 x 32 x 3, values 0-255, and their labels."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    big = tf.image.resize(x, (32, 32)).numpy()
    x = np.clip(np.repeat(big, 3, axis=-1) * 255, 0, 255).astype("float32")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))[:n]
    return x[idx], d.target[idx].astype("int64")


def held_out_text(n: int):
    """Token-id sequences (keras.io's IMDB shape: 200 ids of 20,000) whose class (0 or 1) is a keyword
    token placed at a random position."""
    rng = np.random.default_rng(0)
    x = rng.integers(3, TEXT_VOCABULARY, size=(n, TEXT_STEPS)).astype("int32")
    y = rng.integers(0, 2, n)
    x[np.arange(n), rng.integers(0, TEXT_STEPS, n)] = 1 + y
    return x, y.astype("int64")


def _transformer():
    """keras.io's "Text classification with Transformer" as written there (Keras 3): two custom
    layer classes without get_config, the block's inside followed by the relevance engine."""
    import keras
    from keras import layers, ops

    class TransformerBlock(layers.Layer):
        def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1):
            super().__init__()
            self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
            self.ffn = keras.Sequential([layers.Dense(ff_dim, activation="relu"), layers.Dense(embed_dim)])
            self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
            self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
            self.dropout1 = layers.Dropout(rate)
            self.dropout2 = layers.Dropout(rate)

        def call(self, inputs):
            attn_output = self.dropout1(self.att(inputs, inputs))
            out1 = self.layernorm1(inputs + attn_output)
            return self.layernorm2(out1 + self.dropout2(self.ffn(out1)))

    class TokenAndPositionEmbedding(layers.Layer):
        def __init__(self, maxlen, vocab_size, embed_dim):
            super().__init__()
            self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
            self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

        def call(self, x):
            positions = self.pos_emb(ops.arange(start=0, stop=ops.shape(x)[-1], step=1))
            return self.token_emb(x) + positions

    inputs = layers.Input(shape=(TEXT_STEPS,))
    x = TokenAndPositionEmbedding(TEXT_STEPS, TEXT_VOCABULARY, 32)(inputs)
    x = TransformerBlock(32, 2, 32)(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dropout(0.1)(x)
    x = layers.Dense(20, activation="relu")(x)
    x = layers.Dropout(0.1)(x)
    return keras.Model(inputs=inputs, outputs=layers.Dense(2, activation="softmax")(x))


def build(name: str):
    import tensorflow as tf

    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    if name == "Transformer":  # https://keras.io/examples/nlp/text_classification_with_transformer/
        model = _transformer()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model
    if name == "BiLSTM":  # https://keras.io/examples/nlp/bidirectional_lstm_imdb/
        layers = tf.keras.layers
        inputs = tf.keras.Input(shape=(None,), dtype="int32")
        h = layers.Embedding(TEXT_VOCABULARY, 128)(inputs)
        h = layers.Bidirectional(layers.LSTM(64, return_sequences=True))(h)
        h = layers.Bidirectional(layers.LSTM(64))(h)
        model = tf.keras.Model(inputs, layers.Dense(1, activation="sigmoid")(h))
        model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        return model
    model = getattr(tf.keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def gradient_pass(model, x, batch_size: int) -> float:
    """Seconds of one eager gradient of the top logit with respect to the input, batch by batch."""
    import tensorflow as tf

    ids = np.issubdtype(np.asarray(x).dtype, np.integer)  # token ids: with respect to the embedding
    t = time.perf_counter()
    for start in range(0, len(x), batch_size):
        xb = tf.convert_to_tensor(x[start:start + batch_size])
        with tf.GradientTape() as tape:
            if not ids:
                tape.watch(xb)
            out = model(xb, training=False)
            top = tf.reduce_max(out, axis=-1)
        grad = tape.gradient(top, model.trainable_variables[0] if ids else xb)
        tf.convert_to_tensor(grad).numpy()
    return time.perf_counter() - t


def relevance_pass(model, x, columns, batch_size: int) -> dict:
    """Seconds of the native relevance pass alone (no embedding), traced as the callback runs it, and eager."""
    from flowcallback.core.lrp.native import NativeLRP

    engine = NativeLRP(model, columns, "lrp.epsilon")
    compiled = engine.compiled(min(batch_size, len(x)))
    verified = compiled.verify(x[:16])
    compiled.relevance(x[:batch_size])  # warm-up: the trace
    t = time.perf_counter()
    compiled.relevance(x)
    traced = time.perf_counter() - t
    t = time.perf_counter()
    engine.relevance(x[:batch_size], batch_size=batch_size)
    eager_one_batch = time.perf_counter() - t
    return {"traced_seconds": round(traced, 3), "verified": verified, "difference": compiled.difference,
            "eager_seconds": round(eager_one_batch * len(x) / min(batch_size, len(x)), 3)}


def snapshots(model, x, y, layers, repeat: int, batch_size: int, pages: int, out_dir: Path) -> dict:
    """Stage seconds of the first snapshot and the median of the next ``repeat``, and page sizes."""
    from flowcallback.pipeline import Snapshotter
    from flowcallback.settings import SnapshotSettings

    settings = SnapshotSettings(background=False, lrp_backend="native", layers=layers, batch_size=batch_size)
    snap = Snapshotter((x, y), out_dir, settings)
    t = time.perf_counter()
    snap.prepare(model)
    prepare_seconds = time.perf_counter() - t
    takes = []
    for epoch in range(max(repeat + 1, pages)):
        t = time.perf_counter()
        snap.take(epoch)
        takes.append((time.perf_counter() - t, dict(snap.timings[epoch])))
    snap.close()
    first = takes[0]
    rest = sorted(takes[1:repeat + 1], key=lambda take: take[0]) or [first]
    median = rest[len(rest) // 2]

    def stages(take):
        wall, timing = take
        return dict({s: round(timing.get(f"{s}_seconds", 0.0), 3) for s in STAGES},
                    snapshot=round(wall, 3), knn=round(timing.get("knn_seconds", 0.0), 3),
                    mcl=round(timing.get("mcl_seconds", 0.0), 3))

    page = out_dir / "epoch_000.html"
    return {"columns": len(snap.plan.layer_names), "prepare_seconds": round(prepare_seconds, 3), "first": stages(first),
            "warm": stages(median), "epoch_page_mb": round(page.stat().st_size / 2**20, 3),
            "run_page_mb": round((out_dir / "index.html").stat().st_size / 2**20, 3),
            "run_page_epochs": len(takes)}


def fit_overhead(name: str, train: int = 300, n_held_out: int = 150) -> dict:
    """Issue 18's table: one epoch of ``model.fit`` on ``train`` images, without and with the callback
    at its defaults (snapshots of epochs 0 and 1 of ``held_out`` images, in the background)."""
    import tensorflow as tf

    from flowcallback import FlowCallback

    x, y = held_out(train + n_held_out)
    walls = {}
    for label in ("without", "with"):
        model = build(name)
        callbacks = []
        if label == "with":
            tmp = tempfile.mkdtemp(prefix="real_models_fit_")
            callbacks = [FlowCallback((x[train:], y[train:]), log_dir=Path(tmp) / "run", verbose=0)]
        t = time.perf_counter()
        model.fit(x[:train], y[:train], epochs=1, batch_size=32, verbose=0, callbacks=callbacks)
        walls[label] = round(time.perf_counter() - t, 2)
        tf.keras.backend.clear_session()
    return {"fit_without_seconds": walls["without"], "fit_with_seconds": walls["with"],
            "fit_ratio": round(walls["with"] / walls["without"], 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--pages", type=int, default=0, help="take this many snapshots for the run page size")
    p.add_argument("--all-layers", action="store_true", help='also time layers="all"')
    p.add_argument("--fit", action="store_true",
                   help="also time one epoch of fit on 300 images without and with the callback (150 held out)")
    p.add_argument("--out", default="real_models.json")
    args = p.parse_args(argv)

    from flowcallback.core import capture

    images, text = held_out(args.samples), None
    rows = []
    for name in args.models.split(","):
        if name in TEXT_MODELS:
            text = text or held_out_text(args.samples)
        x, y = text if name in TEXT_MODELS else images
        model = build(name)
        gradient_pass(model, x[:args.batch_size], args.batch_size)  # warm-up: kernels, allocator
        grad = min(gradient_pass(model, x, args.batch_size) for _ in range(2))
        row = {"model": name, "layers": len(model.layers), "eligible": capture.choose_columns(model).eligible,
               "gradient_seconds": round(grad, 3)}
        row["relevance"] = relevance_pass(model, x, capture.select_layers(model), args.batch_size)
        row["relevance"]["over_gradient"] = round(row["relevance"]["traced_seconds"] / grad, 2)
        print(f"{name:15s} relevance pass alone: traced {row['relevance']['traced_seconds']:.2f} s "
              f"({row['relevance']['over_gradient']:.2f} x the gradient pass; checked against eager: "
              f"{row['relevance']['verified']}, difference {row['relevance']['difference']:.1e}), eager about "
              f"{row['relevance']['eager_seconds']:.2f} s", flush=True)
        for label, layers in [("default", None)] + ([("all", "all")] if args.all_layers else []):
            with tempfile.TemporaryDirectory() as tmp:
                res = snapshots(model, x, y, layers, args.repeat, args.batch_size, args.pages, Path(tmp) / "run")
            res["R"] = round(res["warm"]["snapshot"] / grad, 2)
            res["lrp_over_gradient"] = round(res["warm"]["lrp"] / grad, 2)
            row[label] = res
            w = res["warm"]
            print(f"{name:15s} {label:8s} columns {res['columns']:4d}/{row['eligible']:4d}  gradient {grad:6.2f} s  "
                  f"snapshot {w['snapshot']:7.2f} s (first {res['first']['snapshot']:7.2f})  R {res['R']:6.2f}  "
                  f"LRP/grad {res['lrp_over_gradient']:5.2f}  | " + " ".join(f"{s} {w[s]:.2f}" for s in STAGES)
                  + f"  | pages {res['epoch_page_mb']:.2f} MB, run {res['run_page_mb']:.2f} MB "
                  f"({res['run_page_epochs']} epochs)", flush=True)
        if args.fit:
            row.update(fit_overhead(name))
            print(f"{name:15s} fit, one epoch of 300 images: {row['fit_without_seconds']:.1f} s without the callback, "
                  f"{row['fit_with_seconds']:.1f} s with it (epochs 0 and 1 of 150 images): x{row['fit_ratio']:.2f}",
                  flush=True)
        row["peak_rss_mb"] = round(peak_rss_mb(), 1)
        rows.append(row)
    out = write_json(args.out, {"samples": args.samples, "batch_size": args.batch_size, "repeat": args.repeat,
                                "models": rows})
    print(f"written {out}")


if __name__ == "__main__":
    sys.exit(main())
