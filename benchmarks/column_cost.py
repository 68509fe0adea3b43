"""What one more column costs a snapshot, for the set-up warning of ``layers="all"``.

    python benchmarks/column_cost.py [--samples 200 1000 3000] [--depths 4 30] [--repeat 2]

An MLP of ``depth`` Dense(64, relu) layers on 64 planted features (10 classes) is trained one
epoch, then :func:`flowcallback.snapshot` takes ``layers="all"`` snapshots of ``--samples`` samples
(the first one warms the caches: numba's MCL kernel, TensorFlow's traced passes; the best of the
next ``--repeat`` is reported). The baseline is the shallowest model in the same run: the seconds
per extra column at each size are ``(deep - shallow) / (extra columns)``, everything after the
capture included (kNN, MCL, matching, flows, metrics, projection, page) as well as the forward and
LRP passes of those layers. A least-squares line ``a + b * samples / 1000`` through them gives
:data:`flowcallback.core.capture.SECONDS_PER_COLUMN` (``a``) and
``SECONDS_PER_COLUMN_PER_1000`` (``b``).

Writes benchmarks/results/column_cost.json.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from _common import write_json


def mlp(depth: int):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    h = inputs
    for _ in range(depth):
        h = keras.layers.Dense(64, activation="relu")(h)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))


def snapshot_seconds(model, x, y, repeat: int) -> float:
    from flowcallback import snapshot

    best = float("inf")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layers="all" warns of its cost: this measures it
        for epoch in range(repeat + 1):
            t = time.perf_counter()
            snapshot(model, (x, y), tmp, epoch=epoch, layers="all", verbose=0)
            if epoch:  # the first one warms the caches
                best = min(best, time.perf_counter() - t)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[200, 1000, 3000])
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 30])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for n in args.samples:
        y = rng.integers(0, 10, n)
        x = (rng.normal(size=(n, 64)) + 3 * np.eye(10, 64)[y]).astype("float32")
        seconds = {}
        for depth in args.depths:
            model = mlp(depth)
            model.compile("adam", "sparse_categorical_crossentropy")
            model.fit(x, y, epochs=1, verbose=0)
            seconds[depth] = snapshot_seconds(model, x, y, args.repeat)
            print(f"samples {n:5d}  columns {depth + 1:3d}  snapshot {seconds[depth]:6.2f} s", flush=True)
        low, high = min(args.depths), max(args.depths)
        per_column = (seconds[high] - seconds[low]) / (high - low)
        rows.append({"samples": n, "snapshot_seconds": {str(d + 1): s for d, s in seconds.items()},
                     "seconds_per_column": per_column})
        print(f"samples {n:5d}  seconds per extra column {per_column:.3f}", flush=True)
    b, a = np.polyfit([r["samples"] / 1000 for r in rows], [r["seconds_per_column"] for r in rows], 1)
    print(f"per column: {a:.2f} s + {b:.2f} s per 1,000 samples")
    path = write_json("column_cost.json", {"rows": rows, "fit": {"seconds_per_column": float(a),
                                                                 "seconds_per_column_per_1000": float(b)}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
