"""What a run directory costs to read: peak memory and time of ``load_run`` + ``flowcallback report``
against the directory's size, for hostile directories and a healthy run of similar size.

Each directory is reported in a child process of its own; the child first imports flowcallback
and the page writers, resets its peak resident memory (``/proc/self/clear_refs``; where that is
not possible the peak is ``getrusage(RUSAGE_SELF).ru_maxrss``, imports included), and the memory
added is the peak while reading (``VmHWM``) above the resident memory before. Writing the pages costs
about 100 MB whatever the run (plotly figures, the run page): the tiny healthy run measures it,
and the factor is the memory added beyond it per MB of the directory (MB/MB).

Cases (issue 20): a large ``run.json`` (empty lists: refused by size, or past the size bound by
the count of arrays), a large error file, a long model name, a column's order of 2 M ids, 100,000
empty clusters, a ``run.json`` with fewer classes than its graphs, and a healthy run of 2,000 or
more samples, with several epochs.

Usage::

    python benchmarks/hostile_runs.py [--sizes 4 16] [--out hostile_runs.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import write_json  # noqa: E402

_CHILD = """
import contextlib, io, json, resource, sys, time
from flowcallback.cli import main
from flowcallback.core import render, runpage  # noqa: F401 (imported before measuring)
import plotly.graph_objects, pandas  # noqa: F401

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

try:  # the peak so far is that of the imports: reset it (Linux), so that the peak measured is the read's
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base, peak_of = status("VmRSS"), lambda: status("VmHWM")
except OSError:
    base, peak_of = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, None
out, err = io.StringIO(), io.StringIO()
t0 = time.perf_counter()
try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["report", sys.argv[1]])
except MemoryError:
    code = "MemoryError"
seconds = time.perf_counter() - t0
peak = peak_of() if peak_of else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"code": code, "seconds": seconds, "base_mb": base / 1024, "peak_mb": peak / 1024,
                  "stderr": err.getvalue()[-300:]}))
"""


def _dir_mb(d: Path) -> float:
    """Size of the run's own files (not the pages report writes), in MB."""
    total = 0
    for p in d.rglob("*"):
        if p.is_file() and not p.name.endswith((".html", ".js")):
            total += p.stat().st_size
    return total / 1e6


def _healthy(d: Path, n: int, epochs: int = 3, n_classes: int = 10, layers: int = 6) -> Path:
    from flowcallback.core import flows, store

    names = [f"dense_{i}" for i in range(layers)]
    store.write_run_info(d, store.run_info(model_name="m", fingerprint="f",
                                           class_names=[f"class {i}" for i in range(n_classes)],
                                           analyses=["activations"], layers=[(x, "Dense") for x in names],
                                           columns={}, config={}))
    for e in range(epochs):
        rng = np.random.default_rng(e)
        y = rng.integers(0, n_classes, n)
        # clusters of about 20 samples each, mixing the classes: many flows, as in an early epoch
        cols = [(x, "Dense", rng.integers(0, max(2, n // 20), n)) for x in names]
        g = flows.build_flow_graph(cols, y, y, class_names=[f"class {i}" for i in range(n_classes)], epoch=e,
                                   metrics={"accuracy": 1.0, "loss": 0.1})
        store.save_epoch(d, {"activations": g})
    return d


def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def build_cases(root: Path, sizes_mb) -> dict:
    """``{name: run directory}``: a healthy run per size and the hostile cases."""
    cases = {"healthy, tiny (the fixed cost of report)": _healthy(root / "tiny", 60, epochs=2, n_classes=3, layers=2)}
    for n in (2_000, 8_000):
        cases[f"healthy, {n} samples"] = _healthy(root / f"healthy_{n}", n)
    small = lambda name: _healthy(root / name, 60, epochs=2, n_classes=3, layers=2)  # noqa: E731
    for mb in sizes_mb:
        d = small(f"run_json_{mb}")
        info = json.loads((d / "run.json").read_text())
        text = json.dumps(info)
        (d / "run.json").write_text(text[:-1] + ', "filler": [' + ",".join(["[]"] * (mb * 2**20 // 3)) + "]}")
        cases[f"run.json of empty lists, {mb} MB"] = d
        d = small(f"errors_{mb}")
        (d / "errors").mkdir()
        with open(d / "errors" / "epoch_001.txt", "w") as f:
            for _ in range(mb * 10_000):
                f.write("x" * 99 + "\n")
            f.write("RuntimeError: the last line\n")
        cases[f"error file, {mb} MB"] = d
        d = small(f"name_{mb}")
        _edit(d / "run.json", lambda doc, mb=mb: doc["model"].update(name="n" * (mb * 2**20)))
        cases[f"model name, {mb} MB"] = d
    d = small("order")
    _edit(d / "graphs" / "epoch_001" / "activations.json",
          lambda doc: doc["columns"][0].update(order=list(range(2_000_000))))
    cases["order of 2 M ids"] = d
    d = small("clusters")
    _edit(d / "graphs" / "epoch_001" / "activations.json", lambda doc: doc["columns"][0].update(
        clusters=[{"id": i, "size": 0, "class_counts": [0, 0, 0]} for i in range(100_000)]))
    cases["100,000 empty clusters"] = d
    d = small("classes")
    _edit(d / "run.json", lambda doc: doc.update(class_names=["a", "b"]))
    cases["run.json with fewer classes"] = d
    return cases


def measure(d: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(d)], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        return {"code": f"child exited {proc.returncode}", "stderr": proc.stderr[-300:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 16, 30], help="hostile file sizes in MB")
    parser.add_argument("--out", default="hostile_runs.json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = build_cases(Path(tmp), args.sizes)
        print(f"{'case':42s} {'dir MB':>7s} {'exit':>4s} {'added MB':>9s} {'over fixed':>10s} {'MB/MB':>6s} "
              f"{'s':>6s}")
        fixed = None
        for name, d in cases.items():
            size = _dir_mb(d)
            r = measure(d)
            added = r.get("peak_mb", 0) - r.get("base_mb", 0)
            fixed = added if fixed is None else fixed  # the tiny healthy run, measured first
            over = max(added - fixed, 0.0)
            row = dict(case=name, dir_mb=round(size, 2), exit=r["code"], added_mb=round(added, 1),
                       over_fixed_mb=round(over, 1), factor=round(over / size, 2) if size else None,
                       seconds=round(r.get("seconds", 0), 2), stderr=r.get("stderr", ""))
            rows.append(row)
            print(f"{name:42s} {size:7.2f} {str(r['code']):>4s} {added:9.1f} {over:10.1f} {row['factor'] or 0:6.2f} "
                  f"{row['seconds']:6.2f}")
    out = write_json(args.out, {"rows": rows, "note": "added MB: peak RSS of the child reading the directory "
                                                      "(load_run + report) above its RSS after the imports; over "
                                                      "fixed: above that of the tiny healthy run (the pages' fixed "
                                                      "cost); MB/MB: over fixed / dir MB"})
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
