"""Speed against agreement with the ``mcl`` program, for several settings of the fast MCL backend.

    python benchmarks/mcl_settings.py [--layers pool1,conv2,dense10] [--k 100] [--samples 10000]

Trains the LeNet5-style model of paper_scale.py for one epoch on MNIST, builds the activation kNN
graphs of the chosen layers of the 10,000 test images exactly as a snapshot does (streaming
reduction to 128 dimensions, FAISS, k neighbours), runs the ``mcl`` program (``-I 2.0 -te 2``,
its default pruning) once per graph, then the fast backend with each setting below, and prints
wall seconds, the speed-up over ``mcl`` and the ARI against its clusters. Writes
benchmarks/results/mcl_settings.json.

Settings: the default (``select=500, pruning_threshold=2.5e-4, cutoff=3e-4``), the same without
the expansion cutoff and with a larger one, ``select=700, pruning_threshold=1e-4``, and the
``mcl`` program's own pruning (``select=1100, pruning_threshold=1e-4``) with the default cutoff.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np

from _common import write_json

SETTINGS = {
    "default": {},
    "no cutoff": {"cutoff": 0.0},
    "cutoff 1e-3": {"cutoff": 1e-3},
    "select 700, threshold 1e-4": {"select": 700, "pruning_threshold": 1e-4},
    "mcl's pruning": {"select": 1100, "pruning_threshold": 1e-4},
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default="pool1,conv2,dense10")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--data", default=None)
    args = ap.parse_args(argv)

    from sklearn.metrics import adjusted_rand_score as ari

    from flowcallback.core import capture, cluster, knn
    from paper_scale import prepare, run_mcl_program

    ns = argparse.Namespace(model="lenet5", samples=args.samples, epochs=1, train_samples=0, data=args.data)
    model, x, _ = prepare(ns)
    layers = args.layers.split(",")
    emb, _ = capture.capture_activations(model, x, layers, batch_size=256, embed_options={"reduce": "pca", "dim": 128})
    cluster.mcl(knn.knn_graph(emb[layers[0]][:300], 5))  # compile the kernel outside the timing
    rows = []
    for layer in layers:
        g = knn.knn_graph(emb[layer], args.k)
        ref = run_mcl_program(g)
        if ref is None:
            print("mcl program not installed (Debian package 'mcl'): nothing to compare with")
            return
        ref_labels, ref_seconds = ref
        print(f"{layer}: mcl program {ref_seconds:.1f} s, {len(np.unique(ref_labels))} clusters")
        for name, kw in SETTINGS.items():
            t = time.perf_counter()
            labels = cluster.mcl(g, **kw)
            secs = time.perf_counter() - t
            row = {"layer": layer, "setting": name, "kwargs": kw, "seconds": secs, "mcl_seconds": ref_seconds,
                   "speedup": ref_seconds / secs, "ari": float(ari(ref_labels, labels)),
                   "clusters": int(labels.max() + 1), "mcl_clusters": int(len(np.unique(ref_labels)))}
            rows.append(row)
            print(f"  {name:<28}{secs:>7.2f} s  {row['speedup']:>5.2f}x  ARI {row['ari']:.3f}  {row['clusters']} clusters")
    print("\nsetting                      speed-up (min-max)   ARI (min-max)")
    for name in SETTINGS:
        r = [x_ for x_ in rows if x_["setting"] == name]
        print(f"{name:<28} {min(x_['speedup'] for x_ in r):.2f}-{max(x_['speedup'] for x_ in r):.2f}x"
              f"          {min(x_['ari'] for x_ in r):.3f}-{max(x_['ari'] for x_ in r):.3f}")
    path = write_json("mcl_settings.json", {"samples": len(x), "k": args.k, "layers": layers, "rows": rows})
    print("wrote", path)


if __name__ == "__main__":
    main()
