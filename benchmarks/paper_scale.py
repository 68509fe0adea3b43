"""One full snapshot at the paper's scale, stage by stage, against the paper's method and `mcl`.

    python benchmarks/paper_scale.py                      # LeNet5 / MNIST / 10,000 test images
    python benchmarks/paper_scale.py --full               # the paper's method on every layer
    python benchmarks/paper_scale.py --model vgg16-32     # VGG16-style on 32x32x3 (scenario 4)
    options: --samples N, --epochs E (training before the snapshot), --data mnist.npz,
             --paper-layer NAME, --mcl-all, --no-paper, --no-equal-k, --no-lrp, --projection METHOD,
             --no-callback, --cold, --repeat N, --out results/NAME.json

The snapshot is taken by the runner the callback uses (``flowcallback.pipeline.Snapshotter``, whose
analysis is ``flowcallback.core.stages.analyse``), and each stage is timed by its own hooks
(``StageClock``). The script prints the stages, their sum against the snapshot's wall time, and the
wall time of the same snapshot taken by ``FlowCallback`` in ``model.fit`` (skip with --no-callback).
It writes benchmarks/results/paper_scale_<model>.json with, per stage, wall seconds and the peak RSS
of this process (and of the LRP worker process), and:
* the paper's method (exact dense cosine similarity, kNN with k = n / n_classes,
  ``markov-clustering``) on one layer (all with --full): time, memory, speed ratio, and the ARI
  between its clusters and ours; then the same method at our k (skip with --no-equal-k), so that
  the ARI measures the implementation and not the choice of k;
* the ``mcl`` C program on the very same graphs as our MCL: time, ratio, ARI (skipped with a
  message when ``mcl`` is not installed), on the compared layer or, with --mcl-all, on every
  layer's activation graph;
* kNN recall of the reduced embeddings against exact cosine kNN on the raw maps, on a subsample.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import numpy as np

from _common import Timer, load_mnist, peak_rss_mb, process_peak_rss_mb, write_json


def vgg16_32(n_classes=10, seed=0):
    """VGG16's 13 convolutions and 5 poolings on 32x32x3 inputs, with a 512-512-10 head."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    L = tf.keras.layers
    layers = [tf.keras.Input((32, 32, 3))]
    for b, (f, n) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], start=1):
        for i in range(1, n + 1):
            layers.append(L.Conv2D(f, 3, padding="same", activation="relu", name=f"block{b}_conv{i}"))
        layers.append(L.MaxPooling2D(name=f"block{b}_pool"))
    layers += [L.Flatten(name="flatten"), L.Dense(512, activation="relu", name="fc1"),
               L.Dense(512, activation="relu", name="fc2"),
               L.Dense(n_classes, activation="softmax", name="predictions")]
    model = tf.keras.Sequential(layers, name="vgg16_32")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def prepare(args):
    """(model, x_test, y_test) after --epochs of training on MNIST."""
    (x_tr, y_tr), (x_te, y_te) = load_mnist(args.data)
    if args.model == "lenet5":
        import tensorflow as tf

        from mnist_lenet5 import lenet5

        tf.keras.utils.set_random_seed(0)
        model = lenet5()
        f = lambda x: (x.astype("float32") / 255.0)[..., None]  # noqa: E731
    else:
        model = vgg16_32()

        def f(x):  # scenario 4: grey channel repeated, padded to 32x32
            x = np.pad(x.astype("float32") / 255.0, ((0, 0), (2, 2), (2, 2)))
            return np.repeat(x[..., None], 3, axis=-1)
    if args.epochs:
        n_train = len(x_tr) if args.model == "lenet5" else min(len(x_tr), args.train_samples)
        model.fit(f(x_tr[:n_train]), y_tr[:n_train], epochs=args.epochs, batch_size=128, verbose=0)
    return model, f(x_te[: args.samples]), y_te[: args.samples].astype(np.int64)


def paper_method(raw, n_classes, k=None):
    """The paper's per-layer method: dense cosine matrix, k = n / n_classes, markov-clustering.

    ``k`` overrides the paper's k, to compare the two methods at equal k.
    """
    import scipy.sparse as sp

    from flowcallback.core import cluster

    t = Timer()
    rss0 = peak_rss_mb()
    x = raw.reshape(len(raw), -1).astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    sim = x @ x.T  # O(n^2) memory and time, as in the paper
    n = len(sim)
    k = k or n // n_classes
    np.fill_diagonal(sim, -np.inf)
    idx = np.argpartition(-sim, k, axis=1)[:, :k]
    rows = np.repeat(np.arange(n), k)
    vals = np.clip(sim[np.arange(n)[:, None], idx].ravel(), 0, None)
    del sim
    g = sp.csr_matrix((vals, (rows, idx.ravel())), shape=(n, n))
    g = g.maximum(g.T).tocsr()
    t_graph = t.lap()
    labels = cluster.mcl(g, backend="reference")
    t_mcl = t.lap()
    return labels, {"seconds": t_graph + t_mcl, "graph_seconds": t_graph, "mcl_seconds": t_mcl,
                    "k": k, "peak_rss_mb": peak_rss_mb(), "rss_growth_mb": peak_rss_mb() - rss0}


def run_mcl_program(g, threads=2):
    """The reference ``mcl`` program on a graph; returns (labels, seconds) or None if absent."""
    import scipy.sparse as sp

    exe = shutil.which("mcl")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "g.abc"), os.path.join(d, "out")
        coo = sp.triu(g, 1).tocoo()
        np.savetxt(src, np.c_[coo.row, coo.col, coo.data], fmt="%d\t%d\t%.6f")
        t = time.perf_counter()
        subprocess.run([exe, src, "--abc", "-I", "2.0", "-te", str(threads), "-o", out, "-V", "all"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        secs = time.perf_counter() - t
        labels = np.arange(g.shape[0])
        for cid, line in enumerate(open(out)):
            for tok in line.split():
                labels[int(tok)] = g.shape[0] + cid
    return labels, secs


def knn_recall(raw_sub, reduced_sub, k):
    import faiss

    from flowcallback.core.embed import embed

    res = []
    for v in (embed(raw_sub), reduced_sub):
        v = np.ascontiguousarray(v, dtype=np.float32)
        ix = faiss.IndexFlatIP(v.shape[1])
        ix.add(v)
        res.append(ix.search(v, k + 1)[1][:, 1:])
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(*res)]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["lenet5", "vgg16-32"], default="lenet5")
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=None,
                    help="training epochs first (default 1 for lenet5, 0 for vgg16-32)")
    ap.add_argument("--train-samples", type=int, default=10_000, help="vgg16-32: training subset")
    ap.add_argument("--data", default=None)
    ap.add_argument("--full", action="store_true", help="the paper's method and mcl on every layer")
    ap.add_argument("--mcl-all", action="store_true", help="the mcl program on every layer's activation graph")
    ap.add_argument("--paper-layer", default=None, help="layer for the paper's method (default: conv2 / block3_conv1)")
    ap.add_argument("--no-paper", action="store_true")
    ap.add_argument("--no-lrp", action="store_true")
    ap.add_argument("--no-equal-k", action="store_true", help="skip the paper's method at our k")
    ap.add_argument("--recall-samples", type=int, default=2000)
    ap.add_argument("--k", type=int, default=None, help="neighbours (default: the library's k='auto')")
    ap.add_argument("--dim", type=int, default=128, help="reduced dimension (the library's default: 128)")
    ap.add_argument("--fit-samples", type=int, default=None,
                    help="rows the PCA basis is fitted on (default: the library's)")
    ap.add_argument("--projection", default="pca", help="the callback's projection setting (pca, umap, auto, none)")
    ap.add_argument("--no-callback", action="store_true", help="skip the snapshot taken by the callback in model.fit")
    ap.add_argument("--cold", action="store_true", help="time the first snapshot of the process (no warm-up)")
    ap.add_argument("--repeat", type=int, default=3, help="timed snapshots of each kind; the median is reported")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    args.projection = None if args.projection == "none" else args.projection
    if args.epochs is None:
        args.epochs = 1 if args.model == "lenet5" else 0

    from sklearn.metrics import adjusted_rand_score as ari

    from flowcallback import FlowCallback, load_run
    from flowcallback.core import capture, cluster, knn
    from flowcallback.pipeline import Snapshotter
    from flowcallback.settings import SnapshotSettings

    model, x, y = prepare(args)
    n_classes = 10
    names = capture.select_layers(model)
    k = args.k or knn.auto_k(len(x), n_classes)
    print(f"model {model.name}, {len(names)} layers, {len(x)} samples, k={k}; "
          f"peak RSS after training {peak_rss_mb():.0f} MiB")
    rss_start = peak_rss_mb()

    # -- one snapshot, by the runner the callback uses, timed by its own stage hooks -----------------
    # (flowcallback/core/stages.py: StageClock). The settings are the callback's, synchronous.
    settings = dict(k=k, dim=args.dim, fit_samples=args.fit_samples, lrp=not args.no_lrp, background=False,
                    projection=args.projection)
    out_dir = tempfile.mkdtemp(prefix="fc-bench-")
    snap = Snapshotter((x, y), out_dir, SnapshotSettings(**settings))
    t = Timer()
    snap.prepare(model)  # validation, layers, LRP engine start: once per fit
    prepare_seconds = t.lap()
    # a first snapshot warms up what runs once per process (TensorFlow's tracing, the MCL kernel's
    # compilation), as the callback's first snapshot in a fit does; the second one is timed
    if not args.cold:
        snap.take(args.epochs)
    takes = []  # (wall seconds, stage timings) of each timed snapshot
    for _ in range(args.repeat):
        t = Timer()
        snap.take(args.epochs)
        takes.append((t.lap(), dict(snap.timings[args.epochs])))
    snapshot_seconds, timings = sorted(takes, key=lambda take: take[0])[len(takes) // 2]  # the median take
    worker = getattr(snap.worker, "_proc", None)
    worker_rss = process_peak_rss_mb(worker.pid) if worker is not None else None
    snap.close()
    # the stages that make up the snapshot's wall time (knn and mcl are inside "cluster", per layer)
    top = ["capture", "lrp", "cluster", "match", "flows", "metrics", "projection", "store", "render"]
    stages = {s_: timings[f"{s_}_seconds"] for s_ in top if f"{s_}_seconds" in timings}
    detail = {s_: timings[f"{s_}_seconds"] for s_ in ("knn", "mcl") if f"{s_}_seconds" in timings}
    stage_sum = sum(stages.values())
    rss = {"snapshot": peak_rss_mb()}
    run = load_run(out_dir)
    graph = run.epoch(args.epochs)
    labels = {("activations", c.name): graph.assignments[:, j]
              for j, c in enumerate(graph.columns) if c.kind == "layer"}
    pred = graph.predictions

    print(f"\n{'stage':<18}{'seconds':>9}")
    for s_, v in stages.items():
        print(f"{s_:<18}{v:>9.2f}")
    for s_, v in detail.items():
        print(f"  {s_ + ' (CPU, all layers)':<26}{v:>9.2f}")
    print(f"{'sum of the stages':<18}{stage_sum:>9.2f}")
    print(f"{'snapshot wall':<18}{snapshot_seconds:>9.2f}   (the runner's take(), median of {args.repeat}: "
          f"{', '.join(f'{w:.2f}' for w, _ in takes)}; prepare {prepare_seconds:.2f} s, once per fit)")
    print(f"stages / wall: {stage_sum / snapshot_seconds:.3f}")

    # -- the same snapshot taken by the callback in model.fit ------------------------------------
    callback_seconds, callback_stages = None, {}
    callback_walls = []
    for _ in range(0 if args.no_callback else args.repeat):
        # snapshot 0 of a fit is taken before its first step; the weights are put back after the
        # fit, so that every repeat snapshots the same model as the runner did
        weights = model.get_weights()
        cb_dir = tempfile.mkdtemp(prefix="fc-bench-cb-")
        cb = FlowCallback((x, y), log_dir=cb_dir, epochs=[0], verbose=0,
                          **{key: v for key, v in settings.items() if key != "background"}, background=False)
        model.fit(x[:256], y[:256], epochs=1, batch_size=256, verbose=0, callbacks=[cb])
        model.set_weights(weights)
        shutil.rmtree(cb_dir, ignore_errors=True)
        callback_walls.append((cb.timings[0]["snapshot_seconds"], cb.timings[0]))
    if callback_walls:
        callback_seconds, cb_timings = sorted(callback_walls, key=lambda take: take[0])[len(callback_walls) // 2]
        callback_stages = {s_: cb_timings[f"{s_}_seconds"] for s_ in top if f"{s_}_seconds" in cb_timings}
        print("callback's stages: " + ", ".join(f"{s_} {v:.2f}" for s_, v in callback_stages.items())
              + f"; sum {sum(callback_stages.values()):.2f} s")
        print(f"callback snapshot wall {callback_seconds:.2f} s (median of "
              f"{', '.join(f'{w:.2f}' for w, _ in callback_walls)}); sum of the benchmark's stages / callback "
              f"snapshot: {stage_sum / callback_seconds:.3f}")
    print(f"peak RSS: this process {peak_rss_mb():.0f} MiB"
          + (f", LRP worker {worker_rss:.0f} MiB" if worker_rss else ""))

    # embeddings and graphs for the comparisons below (not part of the timed snapshot)
    emb, _ = capture.capture_activations(model, x, names, batch_size=256, embed_options={
        "reduce": "pca", "dim": args.dim, "fit_samples": args.fit_samples})
    embeddings = {"activations": emb}
    default_layer = "conv2" if args.model == "lenet5" else "block3_conv1"
    layers_cmp = names if args.full else [args.paper_layer or default_layer]
    graphs = {("activations", n): knn.knn_graph(emb[n], k) for n in names if n in layers_cmp or args.mcl_all}
    shutil.rmtree(out_dir, ignore_errors=True)

    # -- the paper's method and the mcl program -------------------------------------------------
    comparisons = []
    for n in (names if args.mcl_all else layers_cmp):
        row = {"layer": n}
        g = graphs[("activations", n)]
        ours_t = Timer()
        ours = cluster.mcl(g)
        row["ours_mcl_seconds"] = ours_t.lap()
        kg = Timer()
        knn.knn_graph(embeddings["activations"][n], k)
        row["ours_knn_seconds"] = kg.lap()
        row["ours_seconds"] = row["ours_mcl_seconds"] + row["ours_knn_seconds"]
        row["ours_clusters"] = int(ours.max() + 1)
        mc = run_mcl_program(g)
        if mc is None:
            print("mcl program not installed (Debian package 'mcl'): comparison skipped")
        else:
            row["mcl_program_seconds"] = mc[1]
            row["mcl_speedup"] = mc[1] / row["ours_mcl_seconds"]
            row["mcl_ari"] = float(ari(mc[0], ours))
            row["mcl_program_clusters"] = int(len(np.unique(mc[0])))
        if not args.no_paper and n in layers_cmp:
            raw = capture_raw(model, x, n)
            p_labels, p = paper_method(raw, n_classes)
            del raw
            row.update({f"paper_{k_}": v for k_, v in p.items()})
            row["paper_speedup"] = p["seconds"] / row["ours_seconds"]
            row["paper_ari"] = float(ari(p_labels, ours))
            row["paper_clusters"] = int(p_labels.max() + 1)
            if not args.no_equal_k and p["k"] != k:
                # the same method with our k: the clusterings differ only by the graph's
                # construction (exact vs reduced maps) and the MCL implementation
                raw = capture_raw(model, x, n)
                q_labels, q = paper_method(raw, n_classes, k=k)
                del raw
                row.update({f"paper_equal_k_{k_}": v for k_, v in q.items()})
                row["paper_equal_k_speedup"] = q["seconds"] / row["ours_seconds"]
                row["paper_equal_k_ari"] = float(ari(q_labels, ours))
                row["paper_equal_k_clusters"] = int(q_labels.max() + 1)
        comparisons.append(row)
        print("  ".join(f"{k_}={v:.3g}" if isinstance(v, float) else f"{k_}={v}" for k_, v in row.items()))

    # -- kNN recall of the reduced embeddings ---------------------------------------------------
    # measured on the last rows of the held-out set, which the PCA basis (fitted on the first
    # rows) has not seen when the set is large enough
    recall = {}
    m = min(args.recall_samples, len(x))
    k_sub = knn.auto_k(m, n_classes) if m > 1 else None
    for n in names if m > 0 else []:
        raw = capture_raw(model, x[-m:], n)
        if raw.reshape(m, -1).shape[1] <= args.dim:
            continue
        recall[n] = knn_recall(raw, emb[n][-m:], k_sub)
    mcl_rows = [r for r in comparisons if "mcl_ari" in r]
    if len(mcl_rows) > 1:
        sp_ = [r["mcl_speedup"] for r in mcl_rows]
        ar_ = [r["mcl_ari"] for r in mcl_rows]
        print(f"mcl program on {len(mcl_rows)} graphs: speed-up {min(sp_):.2f} to {max(sp_):.2f}x, "
              f"ARI {min(ar_):.3f} to {max(ar_):.3f} (median {np.median(ar_):.3f})")
    if recall:
        print(f"kNN recall@{k_sub} of the reduced maps vs raw maps ({m} samples): "
              + ", ".join(f"{n} {v:.3f}" for n, v in recall.items()))

    doc = {
        "model": model.name, "samples": len(x), "layers": names, "k": k, "epochs_trained": args.epochs,
        "accuracy": float(np.mean(pred == y)), "stages_seconds": stages, "stage_detail_cpu_seconds": detail,
        "stage_sum_seconds": stage_sum, "snapshot_seconds": snapshot_seconds, "repeat": args.repeat,
        "snapshot_walls": [w for w, _ in takes], "callback_snapshot_walls": [w for w, _ in callback_walls],
        "prepare_seconds": prepare_seconds,
        "stages_over_snapshot": stage_sum / snapshot_seconds, "callback_snapshot_seconds": callback_seconds,
        "stages_over_callback_snapshot": None if callback_seconds is None else stage_sum / callback_seconds,
        "callback_stages_seconds": callback_stages,
        "settings": {key: v for key, v in settings.items()},
        "peak_rss_mb_after_training": rss_start, "peak_rss_mb_by_stage": rss, "peak_rss_mb": peak_rss_mb(),
        "lrp_worker_peak_rss_mb": worker_rss, "comparisons": comparisons, "knn_recall": recall, "recall_k": k_sub,
        "recall_samples": m, "recall_rows": "last", "dim": args.dim, "fit_samples": args.fit_samples,
        "clusters": {f"{a}/{n}": int(v.max() + 1) for (a, n), v in labels.items()},
    }
    path = write_json(args.out or f"paper_scale_{args.model}.json", doc)
    print("wrote", path)


def capture_raw(model, x, layer, batch_size=256):
    """Raw maps of one layer (for the comparisons only; the snapshot never holds them)."""
    import tensorflow as tf

    sub = tf.keras.Model(model.inputs, model.get_layer(layer).output)
    return np.concatenate([np.asarray(sub(x[s : s + batch_size], training=False))
                           for s in range(0, len(x), batch_size)])


if __name__ == "__main__":
    main()
