"""The paper's scenario 1: a LeNet5-style CNN trained on MNIST, 10,000 test images analysed.

Usage::

    python examples/mnist_lenet5.py --data ../shared/data/mnist.npz
    python examples/mnist_lenet5.py --data ../shared/data/mnist.npz --samples 2000 --epochs 2   # quicker
    python examples/mnist_lenet5.py --data fashion_mnist.npz --log-dir flows/fashion   # scenario 2

The ``.npz`` file has the layout of ``keras.datasets`` (x_train, y_train, x_test, y_test).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def load_mnist(path):
    """MNIST as ``((x_train, y_train), (x_test, y_test))`` from a local npz (nothing is downloaded)."""
    with np.load(path, allow_pickle=False) as d:
        return (d["x_train"], d["y_train"]), (d["x_test"], d["y_test"])


def lenet5(n_classes=10):
    """The paper's scenario-1 LeNet5 for 28 x 28 images: 5 x 5 kernels, the second convolution unpadded.

    ``flowcallback.demo.lenet5_digits`` is its sibling for scikit-learn's 8 x 8 digits (3 x 3 kernels,
    both convolutions padded, a seed, a higher learning rate). They are kept apart on purpose: the
    benchmarks import this one and their recorded results (benchmarks/results) are for this exact
    model, and the example shows in full the model it trains.
    """
    import tensorflow as tf

    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [
            tf.keras.Input((28, 28, 1)),
            layers.Conv2D(6, 5, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(16, 5, activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(120, activation="relu", name="dense120"),
            layers.Dense(84, activation="relu", name="dense84"),
            layers.Dense(n_classes, activation="softmax", name="dense10"),
        ],
        name="lenet5",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True,
                        help="local .npz in keras.datasets layout, e.g. ../shared/data/mnist.npz "
                             "(nothing is downloaded)")
    parser.add_argument("--log-dir", default="flows/mnist_lenet5")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs (the paper trained 6)")
    parser.add_argument("--samples", type=int, default=10_000, help="held-out samples analysed (paper: 10,000)")
    parser.add_argument("--snapshot-every", type=int, default=1,
                        help="snapshot every N epochs (0 = untrained included)")
    parser.add_argument("--no-lrp", action="store_true")
    parser.add_argument("--lrp-backend", default="auto", choices=["auto", "native", "innvestigate"])
    parser.add_argument("--k", default="30", help="kNN neighbours, or 'paper' for n_samples / n_classes")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from flowcallback import FlowCallback

    tf.keras.utils.set_random_seed(0)
    (x_tr, y_tr), (x_te, y_te) = load_mnist(args.data)
    x_tr = (x_tr.astype("float32") / 255.0)[..., None]
    x_te = (x_te.astype("float32") / 255.0)[..., None][: args.samples]
    y_te = y_te[: args.samples]
    k = args.k if args.k == "paper" else int(args.k)
    model = lenet5()
    cb = FlowCallback((x_te, y_te), log_dir=args.log_dir, epochs=args.snapshot_every, lrp=not args.no_lrp, k=k,
                      lrp_backend=args.lrp_backend)
    model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=128, callbacks=[cb])
    print("pages:", *(f"  epoch {e}: {p}" for e, p in sorted(cb.pages.items())), sep="\n")


if __name__ == "__main__":
    main()
