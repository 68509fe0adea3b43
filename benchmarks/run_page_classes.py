"""Run-page writes against the number of classes: seconds, peak memory and the page's size.

    python benchmarks/run_page_classes.py [--classes 10 100 1000] [--samples 1000] [--epochs 10]
                                          [--package ROOT] [--out run_page_classes.json]

For each class count, in a fresh child process (so that each peak is its own): ``--samples``
held-out samples of ``--classes`` classes, and predictions that get better over ``--epochs``
snapshots (FlowGraphs made directly, no training). The snapshots reach a
:class:`flowcallback.core.runpage.RunPageState` one by one, with the page rewritten after each, as
the callback's runner writes it; reported: the seconds of all the writes and of the last one, the
child's peak resident memory above what it held after imports and a 10-class warm-up page, the
page's size and that of its embedded confusion data (nonzero cells: at most one per sample and
epoch). The first class count, 10 by default, is the baseline of the same run. ``--package`` runs
the children on the flowcallback of another checkout (its root directory), an older commit say,
to compare (the confusion fields are then null where that version has no such data).
Writes benchmarks/results/run_page_classes.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("FC_BENCH_PACKAGE") or os.path.join(HERE, ".."))

from _common import write_json  # noqa: E402


def graphs(n_classes: int, n: int, epochs: int, seed: int = 0):
    """``(class names, {epoch: {"activations": FlowGraph}})`` with predictions right more often each epoch."""
    import numpy as np

    from flowcallback.core import flows

    rng = np.random.default_rng(seed)
    names = [f"class {i}" for i in range(n_classes)]
    y = rng.integers(0, n_classes, n)
    out = {}
    for e in range(epochs):
        right = rng.random(n) < 0.3 + 0.6 * e / max(epochs - 1, 1)
        p = np.where(right, y, rng.integers(0, n_classes, n))
        cols = [("conv", "Conv2D", (y + rng.integers(0, 3, n)) % 16), ("dense", "Dense", y % 12)]
        out[e] = {"activations": flows.build_flow_graph(cols, y, p, class_names=names, epoch=e)}
    return names, out


def write_pages(n_classes: int, n: int, epochs: int) -> dict:
    """Write the run page after each snapshot; the seconds of the writes, the page's sizes."""
    import tempfile

    from flowcallback.core import runpage

    names, gs = graphs(n_classes, n, epochs)
    info = {"model": {"name": "bench"}, "class_names": names, "analyses": ["activations"],
            "layers": [{"name": "conv", "type": "Conv2D"}, {"name": "dense", "type": "Dense"}]}
    state = runpage.RunPageState(tempfile.mkdtemp(prefix="fc-bench-page-"), info)
    seconds = []
    for e, g in gs.items():
        state.add_epoch(e, g)
        t = time.perf_counter()
        path = state.write()
        seconds.append(time.perf_counter() - t)
    text = path.read_text("utf-8")
    doc = {"write_seconds_total": sum(seconds), "last_write_seconds": seconds[-1], "page_bytes": len(text),
           "confusion_bytes": None, "confusion_cells": None}
    if hasattr(state, "confusions"):  # an older flowcallback embeds no confusion cells
        cells = state.confusions
        doc["confusion_bytes"] = len(json.dumps(runpage._confusion_cells(cells), separators=(",", ":")))
        doc["confusion_cells"] = int(sum(len(c.count) for c in cells.values()))
    return doc


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024.0 for line in f if line.startswith("VmRSS:"))


def hwm_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024.0 for line in f if line.startswith("VmHWM:"))


def child(n_classes: int, n: int, epochs: int) -> None:
    write_pages(10, 50, 2)  # imports and caches what a page needs
    with open("/proc/self/clear_refs", "w") as f:  # resets the peak (VmHWM) to the memory held now
        f.write("5")
    before = rss_mb()
    doc = write_pages(n_classes, n, epochs)
    doc.update(classes=n_classes, samples=n, epochs=epochs, peak_mb_above_start=hwm_mb() - before,
               start_mb=before)
    print(json.dumps(doc))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--package", help="root of the checkout whose flowcallback the children import")
    ap.add_argument("--out", default="run_page_classes.json")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        return child(args.child, args.samples, args.epochs)
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               FC_BENCH_PACKAGE=os.path.abspath(args.package) if args.package else "")
    for k in args.classes:
        out = subprocess.run([sys.executable, __file__, "--child", str(k), "--samples", str(args.samples),
                              "--epochs", str(args.epochs)], env=env, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        confusion = ("" if row["confusion_cells"] is None else
                     f", confusion {row['confusion_cells']} cells {row['confusion_bytes'] / 1e3:.1f} kB")
        print(f"{k:>6} classes, {args.samples} samples, {args.epochs} epochs: "
              f"writes {row['write_seconds_total']:.2f} s (last {row['last_write_seconds'] * 1000:.0f} ms), "
              f"peak +{row['peak_mb_above_start']:.0f} MiB, "
              f"page {row['page_bytes'] / 1e6:.2f} MB{confusion}")
    doc = {"rows": rows, "baseline_classes": args.classes[0], "package": args.package or "this checkout"}
    print("wrote", write_json(args.out, doc))


if __name__ == "__main__":
    main()
