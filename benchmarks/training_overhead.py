"""How much longer `model.fit` takes with a snapshot at every epoch.

    python benchmarks/training_overhead.py [--epochs 3] [--samples 10000] [--no-lrp] [--nice 10] [--data mnist.npz]
        [--out NAME.json]

Trains the LeNet5-style model of examples/mnist_lenet5.py on the 60,000 MNIST training images
twice from the same seed: without the callback, then with ``FlowCallback`` snapshotting every
epoch (the untrained epoch 0 included) on ``--samples`` test images, activations and LRP. Prints
both wall times, their ratio and each snapshot's stage timings; writes
benchmarks/results/training_overhead.json (or --out). The callback's analysis runs in the background while
the next epoch trains, at the priority ``--nice`` sets; the time with the callback includes
waiting for the snapshots still running when training ends (printed apart).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import numpy as np

from _common import load_mnist, peak_rss_mb, write_json


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--no-lrp", action="store_true")
    ap.add_argument("--data", default=None)
    ap.add_argument("--nice", type=int, default=10, help="FlowCallback(nice=...): priority of the background work")
    ap.add_argument("--out", default="training_overhead.json", help="file name under benchmarks/results/")
    args = ap.parse_args(argv)

    import tensorflow as tf

    from flowcallback import FlowCallback
    from mnist_lenet5 import lenet5

    (x_tr, y_tr), (x_te, y_te) = load_mnist(args.data)
    x_tr = (x_tr.astype("float32") / 255.0)[..., None]
    x_te = (x_te.astype("float32") / 255.0)[..., None][: args.samples]
    y_te = y_te[: args.samples]

    # warm-up: TensorFlow's first fit pays one-off graph building costs; so does numba's compile
    tf.keras.utils.set_random_seed(0)
    lenet5().fit(x_tr[:1024], y_tr[:1024], epochs=1, verbose=0)
    from flowcallback.core import cluster, knn

    cluster.mcl(knn.knn_graph(np.random.default_rng(0).random((300, 8)), 5))

    tf.keras.utils.set_random_seed(0)
    model = lenet5()
    t = time.perf_counter()
    model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=128, verbose=2)
    plain = time.perf_counter() - t

    tf.keras.utils.set_random_seed(0)
    model = lenet5()
    log_dir = tempfile.mkdtemp(prefix="fc-overhead-")
    cb = FlowCallback((x_te, y_te), log_dir=log_dir, lrp=not args.no_lrp, verbose=2, nice=args.nice)

    class Clock(tf.keras.callbacks.Callback):  # placed before FlowCallback: notes when training is over
        train_end = None

        def on_train_end(self, logs=None):  # runs before FlowCallback waits for its snapshots
            self.train_end = time.perf_counter()

    clock = Clock()
    t = time.perf_counter()
    model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=128, verbose=2, callbacks=[clock, cb])
    with_cb = time.perf_counter() - t
    training = clock.train_end - t  # until the last epoch ended; the rest is fit waiting for snapshots

    print(f"\nfit without callback: {plain:.1f} s; with a snapshot every epoch: {with_cb:.1f} s; ratio {with_cb / plain:.2f}")
    print(f"  of which training until the last epoch ended: {training:.1f} s; waiting for the snapshots: {with_cb - training:.1f} s")
    for e, tm in sorted(cb.timings.items()):
        print(f"  epoch {e}: " + ", ".join(f"{k} {v:.1f}" for k, v in tm.items()))
    path = write_json(args.out, {
        "epochs": args.epochs, "train_samples": len(x_tr), "snapshot_samples": len(x_te), "lrp": not args.no_lrp,
        "nice": args.nice, "fit_seconds_without": plain, "fit_seconds_with": with_cb, "ratio": with_cb / plain,
        "training_seconds_with": training, "final_wait_seconds": with_cb - training,
        "snapshots": sorted(cb.timings), "snapshot_timings": {str(e): t for e, t in cb.timings.items()},
        "peak_rss_mb": peak_rss_mb(),
    })
    print("wrote", path)


if __name__ == "__main__":
    main()
