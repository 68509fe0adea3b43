"""How much longer `model.fit` takes with FlowCallback: by default within its time budget, or at every epoch.

    python benchmarks/training_overhead.py [--epochs 3] [--samples 10000] [--no-lrp] [--no-untrained] [--nice 0]
        [--budget auto|none|0.5] [--data mnist.npz] [--out NAME.json]

Trains the LeNet5-style model of examples/mnist_lenet5.py on the 60,000 MNIST training images
twice from the same seed: without the callback, then with ``FlowCallback`` snapshotting the epochs
its default time budget affords (``--budget none``: every epoch, the untrained epoch 0 included;
``--no-untrained``: epochs 1 to E, the budget off) on ``--samples`` test images,
activations and LRP. Prints both wall times, their ratio and each snapshot's stage timings; writes
benchmarks/results/training_overhead.json (or --out). The callback's analysis runs in the
background while the next epoch trains, at the priority ``--nice`` sets; the time with the callback
includes waiting for the snapshots still running when training ends (printed apart).
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
    ap.add_argument("--no-untrained", action="store_true",
                    help="no snapshot of the untrained model: one snapshot at the end of each epoch (epochs=[1..E])")
    ap.add_argument("--data", default=None)
    ap.add_argument("--nice", type=int, default=0, help="FlowCallback(nice=...): priority of the background work")
    ap.add_argument("--budget", default="auto",
                    help='FlowCallback(budget=...): "auto" (the default, 0.25), a share in (0, 1], '
                         'or "none" for every epoch')
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

    class Clock(tf.keras.callbacks.Callback):
        """Notes when a callback position is reached at the end of ``fit``."""

        def __init__(self):
            super().__init__()
            self.at = None

        def on_train_end(self, logs=None):
            self.at = time.perf_counter()

    def timed_fit(callbacks):
        """Seconds: whole ``fit``; until the last epoch ended; until every callback's ``on_train_end`` returned.

        ``before`` sits before the FlowCallback (training over), ``after`` after it (snapshots
        flushed). What follows ``after`` is Keras/TensorFlow tearing ``fit`` down; in some runs (with
        or without the callback) this alone took 25 to 50 s (tf.data iterator destruction), so it
        is reported apart and left out of the ratio.
        """
        tf.keras.utils.set_random_seed(0)
        model = lenet5()
        before, after = Clock(), Clock()
        t = time.perf_counter()
        model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=128, verbose=2, callbacks=[before, *callbacks, after])
        end = time.perf_counter()
        return {"fit": end - t, "training": before.at - t, "callbacks_done": after.at - t}

    plain = timed_fit([])
    log_dir = tempfile.mkdtemp(prefix="fc-overhead-")
    snap_epochs = list(range(1, args.epochs + 1)) if args.no_untrained else None
    budget = {"auto": "auto", "none": None}.get(args.budget.lower(), None if snap_epochs else args.budget)
    if budget not in ("auto", None):
        budget = float(budget)
    cb = FlowCallback((x_te, y_te), log_dir=log_dir, lrp=not args.no_lrp, verbose=2, nice=args.nice, epochs=snap_epochs,
                      budget=budget)
    with_cb = timed_fit([cb])

    ratio = with_cb["callbacks_done"] / plain["callbacks_done"]
    wait = with_cb["callbacks_done"] - with_cb["training"]
    print(f"\nfit without callback: {plain['callbacks_done']:.1f} s; with a snapshot every epoch: "
          f"{with_cb['callbacks_done']:.1f} s; ratio {ratio:.2f}")
    print(f"  with the callback: training until the last epoch ended {with_cb['training']:.1f} s, "
          f"then waiting for the snapshots {wait:.1f} s")
    print(f"  TensorFlow's teardown after the callbacks (left out): "
          f"{plain['fit'] - plain['callbacks_done']:.1f} s without, "
          f"{with_cb['fit'] - with_cb['callbacks_done']:.1f} s with; ratio of whole fit calls "
          f"{with_cb['fit'] / plain['fit']:.2f}")
    schedule = cb.schedule
    if schedule is not None:
        print(f"  budget {schedule['budget']:.0%}: snapshots at epochs {schedule['taken']}, "
              f"skipped {schedule['skipped']}; spent {schedule['spent']:.0%} (as the callback measured it)")
    for e, tm in sorted(cb.timings.items()):
        print(f"  epoch {e}: " + ", ".join(f"{k} {v:.1f}" for k, v in tm.items()))
    path = write_json(args.out, {
        "epochs": args.epochs, "train_samples": len(x_tr), "snapshot_samples": len(x_te), "lrp": not args.no_lrp,
        "nice": args.nice, "untrained_snapshot": not args.no_untrained, "budget": budget, "schedule": schedule,
        "fit_seconds_without": plain["callbacks_done"], "fit_seconds_with": with_cb["callbacks_done"], "ratio": ratio,
        "training_seconds_with": with_cb["training"], "final_wait_seconds": wait,
        "teardown_seconds_without": plain["fit"] - plain["callbacks_done"],
        "teardown_seconds_with": with_cb["fit"] - with_cb["callbacks_done"],
        "whole_fit_ratio": with_cb["fit"] / plain["fit"],
        "snapshots": sorted(cb.timings), "snapshot_timings": {str(e): t for e, t in cb.timings.items()},
        "peak_rss_mb": peak_rss_mb(),
    })
    print("wrote", path)


if __name__ == "__main__":
    main()
