"""Cost of the neuron clusters (issue 22, item 3): per layer width, and inside a real snapshot.

    python benchmarks/neuron_clusters.py [--samples 2000] [--widths 64 512 2048 4096 16384 65536]
                                         [--classes 10 1000] [--snapshot-samples 2000]

1. **Per layer width.** Planted responses (``--samples`` samples; each unit prefers the classes of
   one of 8 groups) for layers of each width and number of classes. For each: the seconds of the
   class means' accumulation over the samples (:class:`flowcallback.core.aggregate.LayerClassMeans`,
   batches of 256, the stage the snapshot already runs: the baseline), the seconds of
   :func:`flowcallback.core.neurons.neuron_clusters` (clusters, seriation, top samples; best of 3),
   the MiB of per-sample responses kept for the top samples, and the ARI of the clusters against the
   planted groups.
2. **In a real snapshot.** The LeNet5 of examples/mnist_lenet5.py trained one epoch on 10,000 MNIST
   training images, with the callback taking a snapshot of ``--snapshot-samples`` MNIST test images
   at epoch 1 (LRP off): the ``neurons_seconds`` of the snapshot's stage clock against its
   ``snapshot_seconds``, both from the same snapshot (``callback.timings``).

Writes benchmarks/results/neuron_clusters.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import numpy as np

from _common import best_of, load_mnist, write_json


def planted(n, units, n_classes, groups=8, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    unit_group = np.arange(units) % groups
    class_group = np.arange(n_classes) % groups
    hot = (class_group[y][:, None] == unit_group[None, :]).astype(np.float32)
    r = 2.0 * hot + rng.normal(size=(n, units)).astype(np.float32)
    return (r * rng.uniform(0.5, 5.0, units).astype(np.float32)), y, unit_group


def accumulate(responses, labels, n_classes):
    """The class means (and the kept responses) as a snapshot accumulates them, batch by batch."""
    from flowcallback.core.aggregate import LayerClassMeans

    acc = LayerClassMeans(labels, n_classes, keep_responses=responses.size)
    for start in range(0, len(responses), 256):
        acc.add("layer", responses[start:start + 256], start)
    return acc


def per_width(samples, widths, classes):
    from sklearn.metrics import adjusted_rand_score

    from flowcallback.core.aggregate import MAX_VALUES
    from flowcallback.core.neurons import neuron_clusters

    rows = []
    for n_classes in classes:
        for units in widths:
            if n_classes * units > MAX_VALUES:
                print(f"{n_classes:5d} classes {units:6d} units: skipped, more class means than a layer may hold "
                      f"({MAX_VALUES})", flush=True)
                continue
            r, y, groups = planted(samples, units, n_classes)

            t_means, acc = best_of(lambda r=r, y=y, c=n_classes: accumulate(r, y, c))
            means, kept = acc.result()["layer"], acc.responses()["layer"]
            t_clusters, u = best_of(lambda m=means, k=kept: neuron_clusters(m, k, n_clusters=8))
            ari = adjusted_rand_score(groups, u.labels)
            row = {"classes": n_classes, "units": units, "samples": samples, "class_means_seconds": t_means,
                   "neuron_clusters_seconds": t_clusters, "ratio": t_clusters / t_means,
                   "responses_mib": kept.nbytes / 2**20, "clusters": u.n_clusters, "ari_planted": ari}
            rows.append(row)
            print(f"{n_classes:5d} classes {units:6d} units: class means {t_means:7.3f} s, neuron clusters "
                  f"{t_clusters:7.3f} s ({t_clusters / t_means:5.2f}x), responses {row['responses_mib']:7.1f} MiB, "
                  f"ARI vs planted {ari:.3f}", flush=True)
    return rows


def in_snapshot(samples):
    from flowcallback import FlowCallback

    from mnist_lenet5 import lenet5

    (x_tr, y_tr), (x_te, y_te) = load_mnist()
    x_tr = (x_tr[:10000, ..., None] / 255.0).astype("float32")
    x_te = (x_te[:samples, ..., None] / 255.0).astype("float32")
    with tempfile.TemporaryDirectory() as d:
        cb = FlowCallback((x_te, y_te[:samples]), log_dir=os.path.join(d, "run"), epochs=[1], lrp=False, verbose=0,
                          projection=None)
        lenet5().fit(x_tr, y_tr[:10000], epochs=1, batch_size=128, verbose=0, callbacks=[cb])
        t = cb.timings[1]
    out = {"samples": samples, "neurons_seconds": t["neurons_seconds"], "snapshot_seconds": t["snapshot_seconds"],
           "share": t["neurons_seconds"] / t["snapshot_seconds"]}
    print(f"LeNet5 snapshot of {samples} MNIST test images: neuron clusters {out['neurons_seconds']:.3f} s of "
          f"{out['snapshot_seconds']:.2f} s ({100 * out['share']:.1f} %)", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 512, 2048, 4096, 16384, 65536])
    ap.add_argument("--classes", type=int, nargs="+", default=[10, 1000])
    ap.add_argument("--snapshot-samples", type=int, default=2000, help="0 skips the real snapshot")
    ap.add_argument("--out", default="neuron_clusters.json")
    args = ap.parse_args(argv)
    doc = {"per_width": per_width(args.samples, args.widths, args.classes)}
    if args.snapshot_samples:
        doc["snapshot"] = in_snapshot(args.snapshot_samples)
    print("wrote", write_json(args.out, doc))


if __name__ == "__main__":
    main()
