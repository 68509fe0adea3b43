"""Today's MCL kernel against each idea for fewer or cheaper products, on a snapshot's graphs (issue 21).

    python benchmarks/mcl_speed.py [--graphs /tmp/mcl_graphs.npz] [--save /tmp/mcl_graphs.npz]
        [--layers conv2,pool1] [--repeat 2] [--mcl] [--out mcl_speed.json]

The graphs are those of one snapshot of benchmarks/paper_scale.py at 10,000 samples and k = 100:
the LeNet5-style model trained one epoch on MNIST, every layer, activations and LRP (14 graphs),
built by the callback's runner with the clustering replaced by a recorder (``--save`` writes them
to an npz, ``--graphs`` reads them back, which skips the training). On every graph, each variant
runs interleaved with the exact one-column kernel (``group=1``, the kernel before issue 21),
``--repeat`` times (median); the script prints the time ratio, the ARI against the exact kernel
and, with ``--mcl``, against the ``mcl`` program (``-I 2.0 -te 2``). Variants:

* ``paired``: two neighbouring columns expanded together, bitwise the same result;
* ``group 8`` (the default since issue 21): eight neighbouring columns expanded together, one
  vector instruction per entry of a column in the union of their supports, bitwise the same result;
* ``cutoff 3e-4``: products below 3e-4 times the largest product of the two columns are skipped.

It also counts, per round of the default kernel, the products, and those of the columns that
freezing would skip: columns whose values did not change in the previous round (within 1e-4) and
whose support columns did not either, so that their next values are known without expanding them.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import numpy as np
import scipy.sparse as sp

from _common import write_json

VARIANTS = {
    "group 8": {},
    "paired": {"group": 2},
    "cutoff 3e-4": {"cutoff": 3e-4},
}


def build_graphs(samples=10_000, k=100):
    """{"analysis/layer": graph} of one snapshot (see the module docstring)."""
    from flowcallback.core import cluster, knn
    from flowcallback.core.embed import special_rows
    from flowcallback.pipeline import Snapshotter
    from flowcallback.settings import SnapshotSettings

    from paper_scale import prepare

    graphs = {}

    def record(vectors, k, inflation, index="auto", backend="fast", n_threads=None, *, clock=None, analysis=None,
               layer=None, knn_backend="faiss"):  # cluster_layer's signature: build the graph, keep it, no MCL
        v = np.asarray(vectors)
        zero, bad = special_rows(v)
        sub = np.ascontiguousarray(v[~(zero | bad)], dtype=np.float32)
        graphs[f"{analysis}/{layer}"] = knn.knn_graph(sub, min(int(k), len(sub) - 1), index=index).tocsr()
        return np.zeros(len(v), dtype=np.int32)

    model, x, y = prepare(argparse.Namespace(model="lenet5", samples=samples, epochs=1, train_samples=0, data=None))
    real, cluster.cluster_layer = cluster.cluster_layer, record
    try:
        snap = Snapshotter((x, y), tempfile.mkdtemp(prefix="fc-mcl-speed-"),
                           SnapshotSettings(k=k, lrp=True, background=False, projection=None))
        snap.prepare(model)
        snap.take(1)
        snap.close()
    finally:
        cluster.cluster_layer = real
    return graphs


def save_graphs(path, graphs):
    arrays = {}
    for name, g in graphs.items():
        arrays.update({f"{name}|indptr": g.indptr, f"{name}|indices": g.indices, f"{name}|data": g.data})
    np.savez(path, **arrays)


def load_graphs(path):
    with np.load(path) as z:
        names = sorted({key.rsplit("|", 1)[0] for key in z.files})
        return {name: sp.csr_matrix((z[f"{name}|data"], z[f"{name}|indices"], z[f"{name}|indptr"]))
                for name in names}


def run(g, *, group=8, cutoff=0.0, n_threads=2):
    """The fast backend at its defaults, with the kernel's switches."""
    from flowcallback.core import cluster

    return cluster._fast_mcl(g.tocsc(), 2.0, 1.0, 100, 2.5e-4, 500, n_threads, 1e-4, cutoff, group=group)


def round_profile(g):
    """Per round of the default kernel: products, and the products of the columns freezing would skip."""
    from flowcallback.core import _mcl_kernel, cluster

    n = g.shape[0]
    _, ip, ix, d = cluster._stochastic_csc(g.tocsc(), 1.0)
    rows, unchanged = [], np.zeros(n, dtype=bool)
    for _ in range(100):
        colnnz = np.diff(ip)
        cost = colnnz[ix]  # products of each entry (j, k): nnz of column k
        per_col = np.add.reduceat(cost, ip[:-1]) * (colnnz > 0) if len(ix) else np.zeros(n)
        # frozen: unchanged itself and every column of its support unchanged
        moved = np.add.reduceat((~unchanged[ix]).astype(np.int64), ip[:-1]) * (colnnz > 0) if len(ix) else 0
        frozen = unchanged & (moved == 0)
        rows.append({"products": int(per_col.sum()), "frozen_products": int(per_col[frozen].sum()),
                     "frozen_columns": int(frozen.sum())})
        ip2, ix2, d2, chaos = _mcl_kernel.iterate(ip, ix, d, n, 2.0, 2.5e-4, 500, 2)
        diff = abs(sp.csc_matrix((d, ix, ip), shape=(n, n)) - sp.csc_matrix((d2, ix2, ip2), shape=(n, n)))
        unchanged = diff.max(axis=0).toarray().ravel() < 1e-4
        ip, ix, d = ip2, ix2, d2
        if chaos < 1e-4:
            break
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--graphs", default=None, help="npz written by --save (skips the training)")
    ap.add_argument("--save", default=None, help="write the graphs to this npz")
    ap.add_argument("--layers", default=None, help="comma-separated layer names (default: all)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--mcl", action="store_true", help="also the ARI against the mcl program")
    ap.add_argument("--out", default="mcl_speed.json", help="file name under benchmarks/results/")
    args = ap.parse_args(argv)
    from sklearn.metrics import adjusted_rand_score as ari

    graphs = load_graphs(args.graphs) if args.graphs else build_graphs()
    if args.save:
        save_graphs(args.save, graphs)
    if args.layers:
        keep = set(args.layers.split(","))
        graphs = {name: g for name, g in graphs.items() if name.split("/")[1] in keep}
    variants = {name: VARIANTS[name] for name in args.variants.split(",") if name}
    small = next(iter(graphs.values()))[:2500, :2500]
    for kw in [{"group": 1}, *variants.values()]:  # compile every kernel outside the timing
        run(small, **kw)
    rows, totals = [], {name: [0.0, 0.0] for name in variants}
    for name, g in graphs.items():
        row = {"graph": name, "n": g.shape[0], "rounds": round_profile(g), "variants": {}}
        exact = None
        if args.mcl:
            from paper_scale import run_mcl_program

            ref = run_mcl_program(g)
            row["mcl_seconds"] = ref[1] if ref else None
        for vname, kw in variants.items():
            t_old, t_new = [], []
            for _ in range(args.repeat):  # interleaved: today's kernel, the variant, today's kernel, ...
                t = time.perf_counter()
                exact = run(g, group=1)
                t_old.append(time.perf_counter() - t)
                t = time.perf_counter()
                labels = run(g, **kw)
                t_new.append(time.perf_counter() - t)
            v = {"today_seconds": float(np.median(t_old)), "seconds": float(np.median(t_new)),
                 "all_today_seconds": t_old, "all_seconds": t_new, "clusters": int(labels.max() + 1),
                 "ari_vs_today": float(ari(exact, labels)), "identical": bool(np.array_equal(exact, labels))}
            v["speedup"] = v["today_seconds"] / v["seconds"]
            if args.mcl and ref:
                v["ari_vs_mcl"] = float(ari(ref[0], labels))
                row["today_ari_vs_mcl"] = float(ari(ref[0], exact))
            totals[vname][0] += v["today_seconds"]
            totals[vname][1] += v["seconds"]
            row["variants"][vname] = v
        rows.append(row)
        prods = [r["products"] for r in row["rounds"]]
        frozen = sum(r["frozen_products"] for r in row["rounds"])
        print(f"{name}: {len(prods)} rounds, {sum(prods) / 1e9:.2f}e9 products, of which freezing would skip "
              f"{frozen / sum(prods):.3%}" + (f"; today vs mcl ARI {row['today_ari_vs_mcl']:.3f}"
                                                      if "today_ari_vs_mcl" in row else ""))
        for vname, v in row["variants"].items():
            print(f"  {vname:<14} today {v['today_seconds']:6.2f} s  variant {v['seconds']:6.2f} s  "
                  f"{v['speedup']:5.2f}x  ARI vs today {v['ari_vs_today']:.4f}"
                  + (f"  vs mcl {v['ari_vs_mcl']:.3f}" if "ari_vs_mcl" in v else "") + f"  {v['clusters']} clusters",
                  flush=True)
    print("\nvariant         MCL seconds, all graphs (today -> variant)   speed-up   ARI vs today (min)")
    summary = {}
    for vname, (a, b) in totals.items():
        m = min(r["variants"][vname]["ari_vs_today"] for r in rows)
        summary[vname] = {"today_seconds": a, "seconds": b, "speedup": a / b, "min_ari_vs_today": m}
        print(f"{vname:<15} {a:8.1f} -> {b:8.1f}                          {a / b:5.2f}x     {m:.4f}")
    path = write_json(args.out, {"graphs": len(rows), "repeat": args.repeat, "rows": rows, "summary": summary})
    print("wrote", path)


if __name__ == "__main__":
    main()
