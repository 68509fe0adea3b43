"""How the number of neighbours k changes the clusters: the measurement behind the default k.

Trains the LeNet5-style model of examples/mnist_lenet5.py on MNIST for one epoch, captures the
activations of ``--samples`` test images, and for each k builds the kNN graph and runs MCL on every
layer. Prints, per k: mean normalised mutual information (NMI) between the clusters and the true
classes over the layers, the number of clusters per layer, the ARI between the last layer's clusters
and the predictions, and the kNN + MCL seconds. Writes benchmarks/results/choose_k.json.

    python benchmarks/choose_k.py [--samples 2000] [--ks 5,10,20,30,50,100,200] [--layers dense84,dense10]
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import numpy as np

from _common import Timer, load_mnist, write_json


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--ks", default="5,10,20,30,50,100,200")
    ap.add_argument("--data", default=None)
    ap.add_argument("--layers", default=None, help="comma-separated layer names (default: all)")
    args = ap.parse_args(argv)

    import tensorflow as tf
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from flowcallback.core import capture, cluster, knn

    from mnist_lenet5 import lenet5

    tf.keras.utils.set_random_seed(0)
    (x_tr, y_tr), (x_te, y_te) = load_mnist(args.data)
    x_tr = (x_tr.astype("float32") / 255.0)[..., None]
    x_te = (x_te.astype("float32") / 255.0)[..., None][: args.samples]
    y_te = y_te[: args.samples].astype(np.int64)
    model = lenet5()
    model.fit(x_tr, y_tr, epochs=1, batch_size=128, verbose=0)
    names = capture.select_layers(model, args.layers.split(",") if args.layers else None)
    emb, out = capture.capture_activations(model, x_te, names)
    pred = out.argmax(1)
    print(f"accuracy {np.mean(pred == y_te):.4f} on {len(y_te)} samples; layers {names}")
    rows = []
    print(f"{'k':>5} {'mean NMI':>9} {'last ARI vs pred':>17} {'seconds':>8}  clusters per layer")
    for k in [int(s) for s in args.ks.split(",")]:
        t = Timer()
        labels = {n: cluster.mcl(knn.knn_graph(emb[n], k)) for n in names}
        secs = t.lap()
        nmi = {n: float(normalized_mutual_info_score(y_te, lab)) for n, lab in labels.items()}
        n_clusters = {n: int(lab.max() + 1) for n, lab in labels.items()}
        ari_last = float(adjusted_rand_score(pred, labels[names[-1]]))
        rows.append({"k": k, "nmi": nmi, "mean_nmi": float(np.mean(list(nmi.values()))), "n_clusters": n_clusters,
                     "last_layer_ari_vs_predictions": ari_last, "seconds": secs})
        print(f"{k:>5} {rows[-1]['mean_nmi']:>9.3f} {ari_last:>17.3f} {secs:>8.1f}  {list(n_clusters.values())}")
    json_name = f"choose_k_{len(y_te)}.json" if len(y_te) != 2000 else "choose_k.json"
    path = write_json(json_name, {"samples": len(y_te), "layers": names, "rows": rows})
    print("wrote", path)


if __name__ == "__main__":
    main()
