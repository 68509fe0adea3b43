"""Time of the per-epoch 2-D projection (UMAP and PCA), and how far points move between two epochs.

    python benchmarks/projection.py [--sizes 2000 10000] [--dim 128] [--out projection.json]

Data: ``--dim``-dimensional unit rows (plus the embedding's flag column, as the snapshot's
embeddings are) drawn around 10 class centres, like a layer's reduced embedding of a 10-class
held-out set. A second "epoch" is the same rows with noise of 10 % of their spread added and
re-normalised. For each size: the seconds of :func:`flowcallback.core.project.project` with PCA
and with UMAP (the first UMAP call of the process includes numba's compilation and is reported
apart), and, for the aligned second epoch (:func:`flowcallback.core.project.project_layers`), the
mean displacement of the points relative to the layout's root-mean-square radius, for UMAP from
scratch then Procrustes and for UMAP started from the previous layout (``warm_start=True``).
Writes benchmarks/results/projection.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np

from _common import peak_rss_mb, write_json


def embedding(n, dim, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, dim))
    y = rng.integers(0, 10, n)
    x = centres[y] + 0.8 * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.hstack([x, np.zeros((n, 1))]).astype(np.float32), rng


def next_epoch(x, rng, noise=0.1):
    y = x[:, :-1] + noise * x[:, :-1].std() * rng.normal(size=x[:, :-1].shape)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return np.hstack([y, x[:, -1:]]).astype(np.float32)


def timed(fn, *args, repeat=1, **kwargs):
    """Best time of ``repeat`` calls, and the last call's result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t)
    return best, out


def displacement(a, b):
    return float(np.sqrt(((a - b) ** 2).sum(axis=1)).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--out", default="projection.json")
    args = ap.parse_args(argv)

    from flowcallback.core.project import project, project_layers, umap_available

    rows = []
    compile_s = None
    if umap_available():  # numba compiles UMAP's kernels on the first call of a process
        x, _ = embedding(200, args.dim, 1)
        compile_s, _ = timed(project, x, method="umap")
        print(f"first UMAP call of the process (numba compilation, 200 samples): {compile_s:.1f} s")
    for n in args.sizes:
        x0, rng = embedding(n, args.dim, 0)
        x1 = next_epoch(x0, rng)
        row = {"n_samples": n, "dim": args.dim + 1}
        row["pca_s"], _ = timed(project, x0, method="pca", repeat=3)
        p0 = project_layers({"l": x0}, method="pca")
        p1 = project_layers({"l": x1}, p0, method="pca")
        row["pca_move"] = displacement(p0["l"], p1["l"])
        if umap_available():
            row["umap_s"], u0 = timed(project_layers, {"l": x0}, method="umap")
            row["umap_aligned_s"], u1 = timed(project_layers, {"l": x1}, u0, method="umap")
            row["umap_move"] = displacement(u0["l"], u1["l"])
            row["umap_warm_s"], w1 = timed(project_layers, {"l": x1}, u0, method="umap", warm_start=True)
            row["umap_warm_move"] = displacement(u0["l"], w1["l"])
            again = project_layers({"l": x0}, u0, method="umap")
            row["umap_identical_max_diff"] = float(np.abs(again["l"] - u0["l"]).max())
        rows.append(row)
        print(", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    out = write_json(args.out, {"rows": rows, "umap_first_call_s": compile_s, "peak_rss_mb": peak_rss_mb(),
                                "note": "move: mean displacement of the points between two aligned epochs, "
                                        "in units of the layout's RMS radius"})
    print("wrote", out)


if __name__ == "__main__":
    main()
