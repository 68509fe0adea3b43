"""Speed against agreement with the ``mcl`` program, for several settings of the fast MCL backend.

    python benchmarks/mcl_settings.py [--layers pool1,conv2,dense10] [--k 100] [--samples 10000]
        [--multilevel] [--only-default] [--out mcl_settings.json]

Trains the LeNet5-style model of paper_scale.py for one epoch on MNIST, builds the activation kNN
graphs of the chosen layers of the 10,000 test images exactly as a snapshot does (streaming
reduction to 128 dimensions, FAISS, k neighbours), runs the ``mcl`` program (``-I 2.0 -te 2``,
its default pruning) once per graph, then the fast backend with each setting below, and prints
wall seconds, the speed-up over ``mcl`` and the ARI against its clusters. Writes
benchmarks/results/mcl_settings.json.

Settings: the default (``select=500, pruning_threshold=2.5e-4``, exact expansion: ``cutoff=0``),
the same with expansion cutoffs 3e-4 and 1e-3, ``select=700, pruning_threshold=1e-4``, and the
``mcl`` program's own pruning (``select=1100, pruning_threshold=1e-4``).

``--multilevel`` adds an experiment that is not in the library: multilevel MCL, which coarsens
the graph by heavy-edge matching (``levels`` times, halving it each time), runs the fast backend
on the coarse graph, projects the clusters back and smooths their borders with three sweeps of
label propagation on the full graph (the scheme of multilevel partitioners such as Graclus and
MLR-MCL, with MCL at the coarsest level). It measures whether that cheaper clustering agrees with
``mcl`` as well as the fast backend does (docs/performance.md: it does not).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))

import numba as nb
import numpy as np

from _common import write_json

SETTINGS = {
    "default": {},
    "cutoff 3e-4": {"cutoff": 3e-4},
    "cutoff 1e-3": {"cutoff": 1e-3},
    "select 700, threshold 1e-4": {"select": 700, "pruning_threshold": 1e-4},
    "mcl's pruning": {"select": 1100, "pruning_threshold": 1e-4},
}


@nb.njit(cache=True)
def _match(indptr, indices, data, deg, order):
    n = len(indptr) - 1
    mate = -np.ones(n, np.int64)
    for u in order:
        if mate[u] >= 0:
            continue
        best, bw = -1, -1.0
        for p in range(indptr[u], indptr[u + 1]):
            v = indices[p]
            if v != u and mate[v] < 0:
                w = data[p] / np.sqrt(deg[u] * deg[v])
                if w > bw:
                    best, bw = v, w
        mate[u] = u if best < 0 else best
        if best >= 0:
            mate[best] = u
    group = -np.ones(n, np.int64)
    c = 0
    for u in range(n):
        if group[u] < 0:
            group[u] = c
            group[mate[u]] = c
            c += 1
    return group, c


def _heavy_edge_matching(a, rng):
    """Pair every node with its unmatched neighbour of largest normalised weight (or leave it alone)."""
    deg = np.asarray(a.sum(axis=1)).ravel()
    return _match(a.indptr.astype(np.int64), a.indices.astype(np.int64), a.data.astype(np.float64), deg,
                  rng.permutation(a.shape[0]))


def multilevel_mcl(g, levels, sweeps=3, seed=0):
    """The --multilevel experiment (see the module docstring)."""
    import scipy.sparse as sp

    from flowcallback.core import cluster

    rng = np.random.default_rng(seed)
    a = sp.csr_matrix(g, dtype=np.float64) + sp.identity(g.shape[0], format="csr")  # MCL's self-loops
    groups = []
    for _ in range(levels):
        group, c = _heavy_edge_matching(a, rng)
        p = sp.csr_matrix((np.ones(a.shape[0]), (np.arange(a.shape[0]), group)), shape=(a.shape[0], c))
        a = (p.T @ a @ p).tocsr()  # the lumped chain: edge weights summed between groups
        groups.append(group)
    labels = cluster.mcl(a, loop_value=0.0)
    for group in reversed(groups):
        labels = labels[group]
    g = sp.csr_matrix(g)
    for _ in range(sweeps):  # each sample joins the cluster its edges weigh most towards
        onehot = sp.csr_matrix((np.ones(len(labels)), (np.arange(len(labels)), labels)))
        score = (g @ onehot).toarray()
        score[np.arange(len(labels)), labels] += 1.0
        new = score.argmax(axis=1)
        if (new == labels).all():
            break
        labels = new
    return labels


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default="pool1,conv2,dense10")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--data", default=None)
    ap.add_argument("--multilevel", action="store_true", help="also the multilevel MCL experiment, 1 to 3 levels")
    ap.add_argument("--only-default", action="store_true", help="of the fast backend's settings, the default only")
    ap.add_argument("--out", default="mcl_settings.json", help="file name under benchmarks/results/")
    args = ap.parse_args(argv)
    settings = {name: (lambda g, kw=kw: cluster.mcl(g, **kw)) for name, kw in SETTINGS.items()
                if not args.only_default or name == "default"}
    if args.multilevel:
        settings.update({f"multilevel, {lv} level{'s' * (lv > 1)}": (lambda g, lv=lv: multilevel_mcl(g, lv))
                         for lv in (1, 2, 3)})

    from sklearn.metrics import adjusted_rand_score as ari

    from flowcallback.core import capture, cluster, knn

    from paper_scale import prepare, run_mcl_program

    ns = argparse.Namespace(model="lenet5", samples=args.samples, epochs=1, train_samples=0, data=args.data)
    model, x, _ = prepare(ns)
    layers = args.layers.split(",")
    emb, _ = capture.capture_activations(model, x, layers, batch_size=256, embed_options={"reduce": "pca", "dim": 128})
    cluster.mcl(knn.knn_graph(emb[layers[0]][:300], 5))  # compile the kernel outside the timing
    if args.multilevel:
        multilevel_mcl(knn.knn_graph(emb[layers[0]][:300], 5), 1)
    rows = []
    for layer in layers:
        g = knn.knn_graph(emb[layer], args.k)
        ref = run_mcl_program(g)
        if ref is None:
            print("mcl program not installed (Debian package 'mcl'): nothing to compare with")
            return
        ref_labels, ref_seconds = ref
        print(f"{layer}: mcl program {ref_seconds:.1f} s, {len(np.unique(ref_labels))} clusters")
        for name, fn in settings.items():
            t = time.perf_counter()
            labels = fn(g)
            secs = time.perf_counter() - t
            row = {"layer": layer, "setting": name, "kwargs": SETTINGS.get(name), "seconds": secs,
                   "mcl_seconds": ref_seconds, "speedup": ref_seconds / secs, "ari": float(ari(ref_labels, labels)),
                   "clusters": int(labels.max() + 1), "mcl_clusters": int(len(np.unique(ref_labels)))}
            rows.append(row)
            print(f"  {name:<28}{secs:>7.2f} s  {row['speedup']:>5.2f}x  ARI {row['ari']:.3f}  "
                  f"{row['clusters']} clusters")
    print("\nsetting                      speed-up (min-max)   ARI (min-max)")
    for name in settings:
        r = [x_ for x_ in rows if x_["setting"] == name]
        print(f"{name:<28} {min(x_['speedup'] for x_ in r):.2f}-{max(x_['speedup'] for x_ in r):.2f}x"
              f"          {min(x_['ari'] for x_ in r):.3f}-{max(x_['ari'] for x_ in r):.3f}")
    path = write_json(args.out, {"samples": len(x), "k": args.k, "layers": layers, "rows": rows})
    print("wrote", path)


if __name__ == "__main__":
    main()
