"""Two held-out sets in one training run: the flows paper's scenario 3, and a tampered data set (DNNViz).

**Scenario 3** (Halnaut et al. 2020, "detection of bad model"): a LeNet5 trained on MNIST is
evaluated on the MNIST test set and on Fashion-MNIST's. One callback analyses both at every
snapshot; the page of the run (``LOG_DIR/scenario3/index.html``) flags Fashion-MNIST, whose classes the
model's layers do not follow.

**Tampering** (DNNViz's use case): the training set was tampered with: a share of its images carry
a fixed one-pixel pattern and the label of one class (a backdoor, as in BadNets). Held out: the
clean test set, and a copy of it where the same pixel is added to the images of one class. Compared,
the two sets show which layers react to the pattern, and that the tampered class flows to the
backdoor's class.

Usage::

    python examples/held_out_sets.py --mnist ../shared/data/mnist.npz --fashion ../shared/data/fashion_mnist.npz
    python examples/held_out_sets.py --mnist ../shared/data/mnist.npz --scenario tampered --epochs 2
    python examples/held_out_sets.py --mnist ../shared/data/mnist.npz --scenario tampered --share 0   # clean training

Each ``.npz`` has the layout of ``keras.datasets`` (x_train, y_train, x_test, y_test); nothing is
downloaded. What each scenario shows is printed as figures (docs/usage.md, "Several held-out sets",
gives those of a full run).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

#: The pixel of the tampering pattern (row, column): a corner that MNIST's digits leave black.
PIXEL = (26, 26)
#: A layer reacts to the pattern where its units' class means differ between the sets by more than
#: this share (``class_mean_relative`` of :meth:`flowcallback.RunSets.compare_sets`).
REACTS = 0.1


def load_images(path, *, side: int = 28):
    """``((x_train, y_train), (x_test, y_test))`` of a keras.datasets-layout npz, as float images in [0, 1]."""
    with np.load(path, allow_pickle=False) as d:
        def images(x):
            x = np.asarray(x, dtype="float32")
            return (x / 255.0 if x.max() > 1 else x).reshape(len(x), side, side, 1)

        return (images(d["x_train"]), d["y_train"].astype("int64")), (images(d["x_test"]), d["y_test"].astype("int64"))


def with_pixel(x, pixel=PIXEL):
    """A copy of the images ``x`` with the pattern: one pixel at full intensity."""
    x = np.array(x, copy=True)
    x[:, pixel[0], pixel[1], :] = 1.0
    return x


def tamper_training(x, y, *, share: float, target: int, seed: int = 0):
    """The training set tampered with: ``share`` of its images (drawn at random) get the pattern
    and the label ``target``."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(x), int(round(share * len(x))), replace=False)
    x, y = np.array(x, copy=True), np.array(y, copy=True)
    x[chosen] = with_pixel(x[chosen])
    y[chosen] = target
    return x, y


def tampered_copy(x, y, cls: int):
    """A copy of a held-out set where the images of class ``cls`` carry the pattern."""
    x = np.array(x, copy=True)
    x[y == cls] = with_pixel(x[y == cls])
    return x


def lenet5(input_shape=(28, 28, 1), n_classes: int = 10):
    """The LeNet5 of examples/mnist_lenet5.py (the paper's scenario-1 model)."""
    import tensorflow as tf

    layers = tf.keras.layers
    model = tf.keras.Sequential([
        tf.keras.Input(input_shape),
        layers.Conv2D(6, 5, padding="same", activation="relu", name="conv1"),
        layers.MaxPooling2D(name="pool1"),
        layers.Conv2D(16, 5, padding="same" if input_shape[0] < 16 else "valid", activation="relu", name="conv2"),
        layers.MaxPooling2D(name="pool2"),
        layers.Flatten(name="flatten"),
        layers.Dense(120, activation="relu", name="dense120"),
        layers.Dense(84, activation="relu", name="dense84"),
        layers.Dense(n_classes, activation="softmax", name="dense10"),
    ], name="lenet5")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def train(x, y, sets, log_dir, *, epochs: int, seed: int = 0):
    """Train LeNet5 on ``(x, y)`` with one FlowCallback over the named held-out ``sets``; returns the run."""
    import tensorflow as tf

    from flowcallback import FlowCallback, load_run

    tf.keras.utils.set_random_seed(seed)
    model = lenet5(x.shape[1:])
    # budget=None: a snapshot at every epoch (the default budget would skip some on this short training)
    cb = FlowCallback(sets, log_dir=log_dir, budget=None)
    model.fit(x, y, epochs=epochs, batch_size=128, verbose=2, callbacks=[cb])
    return load_run(log_dir)


def scenario3(run, epoch: int) -> dict:
    """What the run of MNIST and Fashion-MNIST shows: each set's accuracy, last-layer ARI and whether
    the run page flags it, and the per-layer comparison."""
    from flowcallback.core.runpage import run_epoch_metrics
    from flowcallback.core.sets import sets_overview

    table = run.compare_sets(epoch, "mnist", "fashion")
    per_set = {n: run_epoch_metrics(run[n]) for n in run.names}  # what the page flags, computed as it does
    flagged = sets_overview(per_set, {}).get("flagged", {}).get(epoch, {})
    return {"table": table, "flagged": flagged,
            "accuracy": {n: run[n].epoch(epoch).metrics["accuracy"] for n in run.names}}


def tampering(run, epoch: int, cls: int, target: int) -> dict:
    """What the run of a clean and a tampered held-out set shows about the tampered class."""
    from flowcallback.core.metrics import class_separation

    out = {"table": run.compare_sets(epoch, "clean", "tampered"), "separation": {}, "to_target": {}}
    for name in run.names:
        g = run[name].epoch(epoch)
        of_class = g.labels == cls
        out["to_target"][name] = float((g.predictions[of_class] == target).mean())
        sep = class_separation(g)
        out["separation"][name] = sep[sep["class"] == cls].set_index("column")["separation"]
    return out


def _print_table(table, columns):
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", required=True,
                        help="MNIST npz (keras.datasets layout), e.g. ../shared/data/mnist.npz")
    parser.add_argument("--fashion", help="Fashion-MNIST npz, for scenario 3")
    parser.add_argument("--scenario", choices=["fashion", "tampered", "both"], default="both")
    parser.add_argument("--log-dir", default="flows/held_out_sets")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2000, help="held-out samples of each set")
    parser.add_argument("--train-samples", type=int, default=None, help="training images (default: all)")
    parser.add_argument("--tampered-class", type=int, default=7)
    parser.add_argument("--target", type=int, default=0, help="the label the tampered training images carry")
    parser.add_argument("--share", type=float, default=0.1, help="share of the training images tampered with")
    args = parser.parse_args(argv)
    if args.scenario in ("fashion", "both") and not args.fashion:
        parser.error("--fashion is needed for scenario 3 (or pass --scenario tampered)")

    (x_tr, y_tr), (x_te, y_te) = load_images(args.mnist)
    x_tr, y_tr = x_tr[:args.train_samples], y_tr[:args.train_samples]
    x_te, y_te = x_te[:args.samples], y_te[:args.samples]
    log_dir = Path(args.log_dir)

    if args.scenario in ("fashion", "both"):
        (_, _), (xf, yf) = load_images(args.fashion)
        run = train(x_tr, y_tr, {"mnist": (x_te, y_te), "fashion": (xf[:args.samples], yf[:args.samples])},
                    log_dir / "scenario3", epochs=args.epochs)
        last = run.epochs[-1]
        found = scenario3(run, last)
        print(f"\nScenario 3, epoch {last}: a LeNet5 trained on MNIST, held out MNIST and Fashion-MNIST")
        _print_table(found["table"], ["column", "ari_classes_a", "ari_classes_b", "ari_gap", "class_mean_relative"])
        for name, acc in found["accuracy"].items():
            print(f"  {name}: accuracy {acc:.1%}" + (f"; flagged on the page: {found['flagged'][name]}"
                                                      if name in found["flagged"] else ""))
        gaps = found["table"]
        print(f"  The model fails on Fashion-MNIST: every layer's clusters follow its classes less than MNIST's "
              f"(ARI gap {gaps['ari_gap'].max():+.2f} to {gaps['ari_gap'].min():+.2f}, widest at "
              f"{gaps.loc[gaps['ari_gap'].idxmin(), 'column']}).")
        print(f"  page: {run.page}")

    if args.scenario in ("tampered", "both"):
        cls, target = args.tampered_class, args.target
        x_bad, y_bad = tamper_training(x_tr, y_tr, share=args.share, target=target)
        run = train(x_bad, y_bad, {"clean": (x_te, y_te), "tampered": (tampered_copy(x_te, y_te, cls), y_te)},
                    log_dir / "tampered", epochs=args.epochs)
        last = run.epochs[-1]
        found = tampering(run, last, cls, target)
        print(f"\nTampering, epoch {last}: {args.share:.0%} of the training images carry pixel {PIXEL} and label "
              f"{target}; the tampered held-out copy has the pixel on class {cls}")
        table = found["table"].set_index("column")
        table["separation_clean"] = found["separation"]["clean"]
        table["separation_tampered"] = found["separation"]["tampered"]
        _print_table(table.reset_index(), ["column", "separation_clean", "separation_tampered", "ari_gap",
                                           "class_mean_relative"])
        for name, share in found["to_target"].items():
            print(f"  {name}: {share:.1%} of class {cls} predicted as {target}")
        reacting = table.index[table["class_mean_relative"] > REACTS].tolist()
        if reacting:
            print(f"  The layers that react to the pattern (class means differ by more than {REACTS:.0%}): "
                  f"{', '.join(reacting)}; class {cls}'s separation there: "
                  + ", ".join(f"{found['separation']['clean'][c]:.2f} -> {found['separation']['tampered'][c]:.2f}"
                              for c in reacting) + ".")
        else:
            print(f"  No layer reacts to the pattern: class means differ by at most "
                  f"{table['class_mean_relative'].max():.1%}, ARI by at most {table['ari_gap'].abs().max():.3f}.")
        print(f"  page: {run.page}")


if __name__ == "__main__":
    main()
