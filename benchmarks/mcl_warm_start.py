"""Issue 21 part 2, measured and not kept: MCL warm-started from the previous epoch, and R-MCL.

    python benchmarks/mcl_warm_start.py --build /tmp/mcl_epochs      # trains, writes e1.npz .. e3.npz
    python benchmarks/mcl_warm_start.py --graphs /tmp/mcl_epochs/e1.npz,/tmp/mcl_epochs/e2.npz,/tmp/mcl_epochs/e3.npz

``--build`` takes the snapshot of benchmarks/mcl_speed.py (LeNet5-style model, MNIST, 10,000 test
images, k = 100, every layer, activations and LRP: 14 graphs) after epochs 1, 2 and 3 of one
training run and saves each epoch's graphs (mcl_speed.py's npz format). Then, for each pair of
consecutive epochs and each graph, the default kernel runs cold on the new graph (the reference)
and from these starts, each counted in products (entries (k, j) of a round's matrix times the
entries of column k, summed over the rounds) and compared with the cold clusters (ARI):

* ``prev_round1`` / ``prev_round2``: the previous epoch's matrix after round 1 / 2 (MCL's rounds
  read only the matrix, so the new graph plays no part: the previous clusters come back);
* ``new_round1_on_prev_support``: the new graph's matrix after round 1, restricted to the support
  of the previous epoch's round-1 matrix (and the diagonal), renormalised;
* ``new_round1_within_prev_clusters``: the new round-1 matrix without its entries between two
  previous clusters, renormalised (the new graph decides within the previous clusters);
* ``avg_new_prev_round1``: the mean of the new and the previous round-1 matrices;
* ``rmcl`` (first pair only): R-MCL (Satuluri and Parthasarathy 2009), whose expansion is
  M @ M_G (M_G the graph's stochastic matrix) instead of M @ M, with the kernel's pruning; a plain
  one-column loop, so only its products and clusters are figures, not its time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import numba as nb
import numpy as np
import scipy.sparse as sp
from mcl_speed import load_graphs, save_graphs
from scipy.sparse.csgraph import connected_components

from _common import write_json


def build(out_dir, epochs=3, samples=10_000, k=100):
    """Graphs of the snapshots after epochs 1..epochs of one training run, as out_dir/e{E}.npz."""
    from flowcallback.core import cluster, knn
    from flowcallback.core.embed import special_rows
    from flowcallback.pipeline import Snapshotter
    from flowcallback.settings import SnapshotSettings

    from _common import load_mnist
    from paper_scale import prepare

    graphs = {}

    def record(vectors, k, inflation, index="auto", backend="fast", n_threads=None, *, clock=None, analysis=None,
               layer=None, knn_backend="faiss"):
        v = np.asarray(vectors)
        zero, bad = special_rows(v)
        sub = np.ascontiguousarray(v[~(zero | bad)], dtype=np.float32)
        graphs[f"{analysis}/{layer}"] = knn.knn_graph(sub, min(int(k), len(sub) - 1), index=index).tocsr()
        return np.zeros(len(v), dtype=np.int32)

    model, x, y = prepare(argparse.Namespace(model="lenet5", samples=samples, epochs=1, train_samples=0, data=None))
    (x_tr, y_tr), _ = load_mnist()
    x_tr = (x_tr.astype("float32") / 255.0)[..., None]
    os.makedirs(out_dir, exist_ok=True)
    real, cluster.cluster_layer = cluster.cluster_layer, record
    try:
        snap = Snapshotter((x, y), tempfile.mkdtemp(prefix="fc-mcl-warm-"),
                           SnapshotSettings(k=k, lrp=True, background=False, projection=None))
        snap.prepare(model)
        for epoch in range(1, epochs + 1):
            if epoch > 1:
                model.fit(x_tr, y_tr, epochs=1, batch_size=128, verbose=0)
            graphs.clear()
            snap.take(epoch)
            save_graphs(os.path.join(out_dir, f"e{epoch}.npz"), graphs)
        snap.close()
    finally:
        cluster.cluster_layer = real


def products(ip, ix):
    return int(np.diff(ip)[ix].sum())


def labels_of(ip, ix, d, n, perm):
    """The fast backend's partition of a converged matrix (as cluster._fast_mcl reads it)."""
    from flowcallback.core import cluster

    cols = np.repeat(np.arange(n), np.diff(ip))
    colmax = np.zeros(n)
    np.maximum.at(colmax, cols, d)
    top = d >= colmax[cols] * (1 - 1e-3)
    rows = np.r_[ix[top], np.arange(n)]
    cols = np.r_[cols[top], np.arange(n)]
    _, lab = connected_components(sp.csr_matrix((np.ones(len(rows)), (cols, rows)), shape=(n, n)), directed=True,
                                  connection="weak")
    out = np.empty(n, dtype=lab.dtype)
    out[perm] = lab
    return cluster.canonical_labels(out)


def run_from(ip, ix, d, n, perm, keep=(), n_threads=2):
    """The default kernel's rounds from (ip, ix, d) to convergence; the matrices after the rounds in keep."""
    from flowcallback.core import _mcl_kernel

    prods, kept = 0, {}
    for r in range(1, 101):
        prods += products(ip, ix)
        ip, ix, d, chaos = _mcl_kernel.iterate(ip, ix, d, n, 2.0, 2.5e-4, 500, n_threads)
        if r in keep:
            kept[r] = (ip, ix, d)
        if chaos < 1e-4:
            break
    return labels_of(ip, ix, d, n, perm), prods, r, kept


def to_samples(ip, ix, d, n, perm):
    """Kernel arrays (RCM order) -> CSC matrix in sample order."""
    coo = sp.csc_matrix((d, ix, ip), shape=(n, n)).tocoo()
    return sp.csc_matrix((coo.data, (perm[coo.row], perm[coo.col])), shape=(n, n))


def to_kernel(m, perm):
    """CSC matrix in sample order -> kernel arrays in RCM order, columns renormalised."""
    a = m.tocsc()[:, perm][perm, :].tocsc()
    a.sum_duplicates()
    a.sort_indices()
    col = np.asarray(a.sum(axis=0)).ravel()
    col[col == 0] = 1
    data = (a.data / np.repeat(col, np.diff(a.indptr))).astype(np.float32)
    return a.indptr.astype(np.int64), a.indices.astype(np.int32), data


@nb.njit(cache=True)
def _rmcl_round(ip, ix, d, gp, gx, gd, n, select, threshold):
    """One R-MCL round, Gamma(M @ M_G) pruned like the kernel (threshold, then the `select` largest)."""
    acc = np.zeros(n, dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    cols_i = []
    cols_v = []
    prods = 0
    chaos = 0.0
    for j in range(n):
        for p in range(gp[j], gp[j + 1]):
            k = gx[p]
            prods += ip[k + 1] - ip[k]
            for q in range(ip[k], ip[k + 1]):
                acc[ix[q]] += gd[p] * d[q]
        nz = np.flatnonzero(acc)
        vals = acc[nz] ** 2
        acc[nz] = 0.0
        keep = vals >= threshold * vals.sum()
        nz = nz[keep]
        vals = vals[keep]
        if len(vals) > select:
            o = np.sort(np.argsort(-vals)[:select])
            nz = nz[o]
            vals = vals[o]
        vals = vals / vals.sum()
        chaos = max(chaos, vals.max() - (vals * vals).sum())
        cols_i.append(nz.astype(np.int32))
        cols_v.append(vals.astype(np.float32))
        counts[j] = len(nz)
    out_p = np.zeros(n + 1, dtype=np.int64)
    out_p[1:] = np.cumsum(counts)
    out_i = np.empty(out_p[-1], dtype=np.int32)
    out_v = np.empty(out_p[-1], dtype=np.float32)
    for j in range(n):
        out_i[out_p[j]:out_p[j + 1]] = cols_i[j]
        out_v[out_p[j]:out_p[j + 1]] = cols_v[j]
    return out_p, out_i, out_v, chaos, prods


def rmcl(g):
    from flowcallback.core import cluster

    n = g.shape[0]
    perm, gp, gx, gd = cluster._stochastic_csc(g.tocsc(), 1.0)
    ip, ix, d, prods, rounds = gp, gx, gd, 0, 0
    while rounds < 100:
        ip, ix, d, chaos, pr = _rmcl_round(ip, ix, d, gp, gx, gd, n, 500, 2.5e-4)
        prods += pr
        rounds += 1
        if chaos < 1e-4:
            break
    return labels_of(ip, ix, d, n, perm), prods, rounds


def measure(prev_g, new_g, with_rmcl):
    from sklearn.metrics import adjusted_rand_score as ari

    from flowcallback.core import cluster

    n = new_g.shape[0]
    pp, pip, pix, pd = cluster._stochastic_csc(prev_g.tocsc(), 1.0)
    lab_prev, _, _, kept = run_from(pip, pix, pd, n, pp, keep=(1, 2))
    prev_m = {r: to_samples(*kept[r], n, pp) for r in kept}
    perm, ip, ix, d = cluster._stochastic_csc(new_g.tocsc(), 1.0)
    lab_cold, prod_cold, rounds_cold, kept_new = run_from(ip, ix, d, n, perm, keep=(1,))
    row = {"cold_products": prod_cold, "cold_rounds": rounds_cold, "cold_clusters": int(lab_cold.max() + 1),
           "ari_prev_vs_cold": ari(lab_prev, lab_cold)}
    round1 = products(ip, ix)  # the new graph's round 1, which the last three starts compute first

    def variant(name, start, extra_products=0, extra_rounds=0):
        lab, pr, rd, _ = run_from(*to_kernel(start, perm), n, perm)
        row[name] = {"products": pr + extra_products, "rounds": rd + extra_rounds, "ari_vs_cold": ari(lab, lab_cold)}

    for r in (1, 2):
        variant(f"prev_round{r}", prev_m[r])
    m1 = to_samples(*kept_new[1], n, perm)
    mask = (prev_m[1] != 0).astype(np.float32) + sp.identity(n, dtype=np.float32, format="csc")
    variant("new_round1_on_prev_support", m1.multiply(mask), round1, 1)
    coo = m1.tocoo()
    same = lab_prev[coo.row] == lab_prev[coo.col]
    variant("new_round1_within_prev_clusters",
            sp.csc_matrix((coo.data[same], (coo.row[same], coo.col[same])), shape=(n, n)), round1, 1)
    variant("avg_new_prev_round1", (m1 + prev_m[1]) * 0.5, round1, 1)
    if with_rmcl:
        t = time.perf_counter()
        lab, pr, rd = rmcl(new_g)
        row["rmcl"] = {"products": pr, "rounds": rd, "ari_vs_cold": ari(lab, lab_cold), "clusters": int(lab.max() + 1),
                       "seconds_scalar_one_thread": time.perf_counter() - t}
    return row


VARIANTS = ("prev_round1", "prev_round2", "new_round1_on_prev_support", "new_round1_within_prev_clusters",
            "avg_new_prev_round1", "rmcl")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=None, help="train and write the graphs of epochs 1-3 to this folder")
    ap.add_argument("--graphs", default=None, help="comma-separated npz files of consecutive epochs")
    ap.add_argument("--no-rmcl", action="store_true")
    ap.add_argument("--out", default="mcl_warm_start.json", help="file name under benchmarks/results/")
    args = ap.parse_args(argv)
    if args.build:
        build(args.build)
        if not args.graphs:
            return
    epochs = [load_graphs(p) for p in args.graphs.split(",")]
    rows, summary = [], {}
    for e in range(1, len(epochs)):
        pair = f"e{e}->e{e + 1}"
        for name, g in epochs[e].items():
            row = {"pair": pair, "graph": name, **measure(epochs[e - 1][name], g, e == 1 and not args.no_rmcl)}
            rows.append(row)
            print(pair, name, {k: round(v["ari_vs_cold"], 4) for k, v in row.items() if isinstance(v, dict)},
                  flush=True)
        mine = [r for r in rows if r["pair"] == pair]
        cold = sum(r["cold_products"] for r in mine)
        summary[pair] = {"ari_prev_vs_cold_min": min(r["ari_prev_vs_cold"] for r in mine)}
        for v in VARIANTS:
            vs = [r[v] for r in mine if v in r]
            if vs:
                a = [x["ari_vs_cold"] for x in vs]
                summary[pair][v] = {"products_vs_cold": sum(x["products"] for x in vs) / cold,
                                    "ari_vs_cold_min": min(a), "ari_vs_cold_median": float(np.median(a)),
                                    "ari_vs_cold_max": max(a)}
    print(json.dumps(summary, indent=1))
    print("wrote", write_json(args.out, {"rows": rows, "summary": summary}))


if __name__ == "__main__":
    main()
