"""Run.layer_metrics() reads the layer metrics each snapshot stored, against computing them from the graphs.

    python benchmarks/run_metrics.py [--epochs 4] [--out run_metrics.json]

Trains the demo (scikit-learn digits, LeNet5-style CNN) with the callback for --epochs epochs
(snapshots 0..epochs, activations and LRP), then times, each in a fresh Run object (nothing
cached): ``Run.layer_metrics()`` (the stored ``metrics.json`` of each epoch), and the baseline, what it
did before the metrics were stored: load every graph (schema checks, arrays, flows recomputed) and
compute ``layer_metrics`` from them. Both tables must be equal. Prints the figures and writes JSON.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd

from _common import write_json


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="run_metrics.json")
    args = ap.parse_args(argv)

    from flowcallback import load_run
    from flowcallback.core.metrics import layer_metrics
    from flowcallback.demo import run_demo

    log_dir = run_demo(os.path.join(tempfile.mkdtemp(prefix="fc-metrics-"), "run"), epochs=args.epochs, verbose=0)
    stored, computed = [], []
    for _ in range(args.repeat):
        run = load_run(log_dir)
        t = time.perf_counter()
        table = run.layer_metrics()
        stored.append(time.perf_counter() - t)
        run = load_run(log_dir)
        t = time.perf_counter()
        baseline = layer_metrics([run.epoch(e, a) for e in run.epochs for a in run.analyses(e)])
        computed.append(time.perf_counter() - t)
    pd.testing.assert_frame_equal(table, baseline.astype(table.dtypes.to_dict()), check_exact=False, rtol=1e-12)
    doc = {"rows": len(table), "epochs": len(run.epochs), "stored_seconds": min(stored),
           "computed_from_graphs_seconds": min(computed), "speedup": min(computed) / min(stored),
           "repeat": args.repeat}
    print(f"{len(table)} rows, {len(run.epochs)} epochs: Run.layer_metrics() {min(stored) * 1000:.1f} ms (stored), "
          f"computed from the graphs {min(computed) * 1000:.1f} ms: {doc['speedup']:.1f}x (best of {args.repeat})")
    print("wrote", write_json(args.out, doc))


if __name__ == "__main__":
    main()
