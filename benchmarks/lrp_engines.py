"""LRP relevance: the native engine against the iNNvestigate worker, time and peak memory, in one run.

    python benchmarks/lrp_engines.py                                   # both models, both engines
    python benchmarks/lrp_engines.py --engines native --out lrp_engines_native.json
    options: --models lenet5,vgg16-32  --engines native,innvestigate  --repeats 3  --warmup 1
             --lenet5-samples 10000  --vgg-samples 2000  --train-samples 3000  --epochs 1
             --weights-dir DIR (keep the trained weights there, and reuse them when present)
             --data mnist.npz  --out NAME.json (under benchmarks/results/)

Models (as benchmarks/paper_scale.py builds them): "lenet5", the paper's scenario 1 (the LeNet5-style
CNN of examples/mnist_lenet5.py) on the first 10,000 MNIST test images; "vgg16-32", VGG16's 13
convolutions on 32x32x3 (scenario 4: the grey image padded and repeated over 3 channels) on the first
2,000. Each is trained ``--epochs`` epoch(s) on the first ``--train-samples`` MNIST training images in
this (parent) process, seed 0, and its weights are saved; every engine then loads those very weights.
Layers: ``capture.select_layers(model)``; analyzer ``lrp.epsilon``; embedding options the
snapshot's defaults (``reduce="pca", dim=128``); batch size 256 bounded as the snapshot bounds it.

Each (model, engine) is measured in a fresh child process (this script with ``--child``), so that
its peak RSS is its own:

* ``setup_s``: ``engine.start(model, layers, x, ...)`` (the native engine copies the model and
  analyses one sample; the worker process starts, imports TensorFlow and iNNvestigate, rebuilds the
  model and builds the analyzer's graph on one sample);
* ``analyze_s``: ``engine.analyze(model.get_weights())``: relevance at every selected layer for
  every image, and its streaming embedding, as one snapshot does; ``--warmup`` calls first, untimed
  for the summary (their times are kept as ``warmup_s``), then best and median of ``--repeats``;
* ``raw_maps_s`` (native only): ``NativeLRP(model, layers, "lrp.epsilon").relevance(batch)`` batch
  by batch over the same images and batch size, the maps thrown away: the relevance alone, no
  embedding (``analyze_s - raw_maps_s`` is about the embedding's cost);
* CPU seconds of each call (this process's user+system time; for the worker, the worker process's,
  read from /proc), which depend less than wall time on what else runs on the machine;
* peak RSS: ``getrusage(RUSAGE_SELF).ru_maxrss`` of the child after set-up, after the analyses and at
  the end (TensorFlow, the model, the images and, for the native engine, everything the engine holds);
  for the iNNvestigate engine also the worker process's peak (``VmHWM`` from /proc before it is
  closed, and ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` after it is reaped; the two agree);
  the engine's total is child + worker (both processes are alive together).

``os.getloadavg()`` is recorded before and after every measurement: the machine may be shared.
Prints a table and writes benchmarks/results/lrp_engines.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
sys.path.insert(0, HERE)

import numpy as np

from _common import load_mnist, process_peak_rss_mb, write_json

ENGINES = ("native", "innvestigate")
MODELS = ("lenet5", "vgg16-32")
EMBED_OPTIONS = {"reduce": "pca", "dim": 128, "fit_samples": None}  # the snapshot's defaults
ANALYZER = "lrp.epsilon"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def load():
    return [round(v, 2) for v in os.getloadavg()]


def rss_self_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_children_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_of(pid) -> float:
    """User + system CPU seconds of a live process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- models and data ------------------------------------------------------------------------------
def build(model_name):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    if model_name == "lenet5":
        from mnist_lenet5 import lenet5

        return lenet5()
    from paper_scale import vgg16_32

    return vgg16_32()


def inputs(model_name, x):
    if model_name == "lenet5":
        return (x.astype("float32") / 255.0)[..., None]
    x = np.pad(x.astype("float32") / 255.0, ((0, 0), (2, 2), (2, 2)))  # scenario 4, as paper_scale.py
    return np.repeat(x[..., None], 3, axis=-1)


def prepare_weights(args, model_name, path):
    """Train (or reuse) the model's weights; saved as an npz of get_weights() in order."""
    if os.path.exists(path):
        log(f"[{model_name}] reusing weights {path}")
        return {"reused": path, "train_seconds": None, "train_accuracy": None}
    (x_tr, y_tr), _ = load_mnist(args.data)
    model = build(model_name)
    t = time.perf_counter()
    hist = model.fit(inputs(model_name, x_tr[: args.train_samples]), y_tr[: args.train_samples],
                     epochs=args.epochs, batch_size=128, verbose=0) if args.epochs else None
    secs = time.perf_counter() - t
    acc = float(hist.history["accuracy"][-1]) if hist else None
    np.savez(path, *[np.asarray(w) for w in model.get_weights()])
    log(f"[{model_name}] trained {args.epochs} epoch(s) on {args.train_samples} images in {secs:.1f} s, "
        f"training accuracy {acc}")
    return {"reused": None, "train_seconds": secs, "train_accuracy": acc}


# -- one (model, engine) in a child process ----------------------------------------------------------
def child(args):
    import tensorflow as tf

    from flowcallback.core import capture
    from flowcallback.core.capture import _bounded_batch
    from flowcallback.core.lrp.engines import NativeEngine, engine_label
    from flowcallback.core.lrp.native import NativeLRP

    m, engine_name = args.model, args.engine
    n = args.lenet5_samples if m == "lenet5" else args.vgg_samples
    _, (x_te, y_te) = load_mnist(args.data)
    x = inputs(m, x_te[:n])
    model = build(m)
    with np.load(args.weights) as d:
        weights = [d[f"arr_{i}"] for i in range(len(d.files))]
    model.set_weights(weights)
    acc = float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), 1) == y_te[:n]))
    names = capture.select_layers(model)
    bs = _bounded_batch(model, names, 256)
    rec = {"model": model.name, "engine": engine_name, "samples": int(n), "layers": names, "batch_size": bs,
           "test_accuracy": acc, "python": sys.version.split()[0], "tensorflow": tf.__version__,
           "keras": _keras_version(), "engine_label": engine_label(engine_name), "analyzer": ANALYZER,
           "embed_options": EMBED_OPTIONS, "rss_mb": {"before_start": rss_self_mb()}, "loadavg": {}}
    log(f"[{m}/{engine_name}] {len(names)} layers, {n} images, batch {bs}, accuracy {acc:.3f}, "
        f"load {load()}")

    engine = NativeEngine(ANALYZER) if engine_name == "native" else capture.LRPWorker(ANALYZER)

    def cpu_now():
        return cpu_self() + (cpu_of(engine._proc.pid) if engine_name == "innvestigate" else 0.0)

    rec["loadavg"]["start_before"] = load()
    t, c = time.perf_counter(), cpu_self()
    engine.start(model, names, x, batch_size=256, embed_options=EMBED_OPTIONS)
    rec["setup_s"] = time.perf_counter() - t
    rec["setup_cpu_s"] = cpu_self() - c + (cpu_of(engine._proc.pid) if engine_name == "innvestigate" else 0.0)
    rec["loadavg"]["start_after"] = load()
    rec["rss_mb"]["after_start"] = rss_self_mb()
    log(f"[{m}/{engine_name}] start {rec['setup_s']:.2f} s")

    def timed(fn, label):
        rec["loadavg"][label + "_before"] = load()
        t, c = time.perf_counter(), cpu_now()
        out = fn()
        wall, cpu = time.perf_counter() - t, cpu_now() - c
        rec["loadavg"][label + "_after"] = load()
        log(f"[{m}/{engine_name}] {label}: {wall:.2f} s wall, {cpu:.2f} s CPU, load {rec['loadavg'][label + '_after']}")
        return out, wall, cpu

    cur = model.get_weights()
    warm, runs, cpus = [], [], []
    for i in range(args.warmup):
        res, w, _ = timed(lambda: engine.analyze(cur), f"warmup{i}")
        warm.append(w)
    for i in range(args.repeats):
        res, w, c = timed(lambda: engine.analyze(cur), f"analyze{i}")
        runs.append(w)
        cpus.append(c)
    rec["warmup_s"] = warm
    rec["analyze_runs_s"] = runs
    rec["analyze_runs_cpu_s"] = cpus
    rec["analyze_best_s"] = min(runs)
    rec["analyze_median_s"] = statistics.median(runs)
    rec["analyze_best_cpu_s"] = min(cpus)
    rec["embedded_layers"] = {k: list(v.shape) for k, v in res.embeddings.items()}
    rec["missing_layers"] = list(res.missing)
    rec["rss_mb"]["after_analyze"] = rss_self_mb()
    if engine_name == "innvestigate":
        pid = engine._proc.pid
        rec["worker_vmhwm_mb"] = process_peak_rss_mb(pid)
        engine.close()
        rec["worker_rusage_children_maxrss_mb"] = rss_children_mb()
        rec["total_peak_rss_mb"] = rec["rss_mb"]["after_analyze"] + max(rec["worker_vmhwm_mb"] or 0.0,
                                                                          rec["worker_rusage_children_maxrss_mb"])
    else:
        engine.close()
        rec["total_peak_rss_mb"] = rec["rss_mb"]["after_analyze"]
        # the relevance alone, no embedding: same images, same batches, maps thrown away
        lrp = NativeLRP(model, names, ANALYZER)

        def raw():
            for s in range(0, len(x), bs):
                lrp.relevance(x[s:s + bs])

        raw_runs = []  # no warm-up of its own: the engine's analyses ran the same kernels just before
        for i in range(args.repeats):
            raw_runs.append(timed(raw, f"raw{i}")[1])
        rec["raw_maps_runs_s"] = raw_runs
        rec["raw_maps_best_s"] = min(raw_runs)
        rec["raw_maps_median_s"] = statistics.median(raw_runs)
    rec["rss_mb"]["end"] = rss_self_mb()
    with open(args.result, "w") as f:
        json.dump(rec, f, indent=1)


def _keras_version():
    try:
        import keras

        return keras.__version__
    except Exception:  # pragma: no cover
        return None


# -- the parent ---------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vgg-innvestigate-repeats", type=int, default=None,
                    help="repeats for vgg16-32 on the iNNvestigate worker (default: --repeats)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--lenet5-samples", type=int, default=10_000)
    ap.add_argument("--vgg-samples", type=int, default=2_000)
    ap.add_argument("--train-samples", type=int, default=3_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default="lrp_engines.json")
    # child mode
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    models = [m for m in args.models.split(",") if m]
    engines = [e for e in args.engines.split(",") if e]
    assert set(models) <= set(MODELS) and set(engines) <= set(ENGINES), (models, engines)
    import tensorflow as tf

    wdir = args.weights_dir or tempfile.mkdtemp(prefix="fc-lrp-bench-")
    os.makedirs(wdir, exist_ok=True)
    doc = {"analyzer": ANALYZER, "embed_options": EMBED_OPTIONS, "repeats": args.repeats, "warmup": args.warmup,
           "epochs_trained": args.epochs, "train_samples": args.train_samples,
           "tensorflow": tf.__version__, "keras": _keras_version(), "loadavg_start": load(), "models": {}}
    for m in models:
        wpath = os.path.join(wdir, f"{m}.npz")
        entry = {"training": prepare_weights(args, m, wpath), "engines": {}}
        for e in engines:
            reps = args.repeats
            if m == "vgg16-32" and e == "innvestigate" and args.vgg_innvestigate_repeats is not None:
                reps = args.vgg_innvestigate_repeats
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
                out = f.name
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--model", m, "--engine", e,
                   "--weights", wpath, "--result", out, "--repeats", str(reps), "--warmup", str(args.warmup),
                   "--lenet5-samples", str(args.lenet5_samples), "--vgg-samples", str(args.vgg_samples)]
            if args.data:
                cmd += ["--data", args.data]
            t = time.perf_counter()
            subprocess.run(cmd, check=True)
            with open(out) as f:
                rec = json.load(f)
            os.unlink(out)
            rec["child_wall_s"] = time.perf_counter() - t
            entry["engines"][e] = rec
        en = entry["engines"]
        if "native" in en and "innvestigate" in en:
            entry["ratio_innvestigate_over_native"] = {
                "analyze_best": en["innvestigate"]["analyze_best_s"] / en["native"]["analyze_best_s"],
                "analyze_median": en["innvestigate"]["analyze_median_s"] / en["native"]["analyze_median_s"],
                "analyze_best_cpu": en["innvestigate"]["analyze_best_cpu_s"] / en["native"]["analyze_best_cpu_s"],
                "setup": en["innvestigate"]["setup_s"] / en["native"]["setup_s"],
                "peak_rss": en["innvestigate"]["total_peak_rss_mb"] / en["native"]["total_peak_rss_mb"],
            }
        doc["models"][m] = entry
    doc["loadavg_end"] = load()
    doc["weights_dir"] = wdir if args.weights_dir else None
    report(doc)
    path = write_json(args.out, doc)
    print("wrote", path)


def report(doc):
    print(f"\nTF {doc['tensorflow']}, Keras {doc['keras']}, {doc['analyzer']}, best (median) of {doc['repeats']} "
          f"after {doc['warmup']} warm-up; load {doc['loadavg_start']} -> {doc['loadavg_end']}")
    hdr = (f"{'model':<10}{'engine':<14}{'n':>6}{'start s':>9}{'analyze s':>17}{'CPU s':>8}{'raw maps s':>17}"
           f"{'peak RSS MiB':>22}")
    print(hdr)
    for m, entry in doc["models"].items():
        for e, r in entry["engines"].items():
            raw = (f"{r['raw_maps_best_s']:.2f} ({r['raw_maps_median_s']:.2f})" if "raw_maps_best_s" in r else "-")
            if e == "innvestigate":
                mem = f"{r['rss_mb']['after_analyze']:.0f} + {r['worker_vmhwm_mb']:.0f} worker"
            else:
                mem = f"{r['total_peak_rss_mb']:.0f}"
            analyze = f"{r['analyze_best_s']:.2f} ({r['analyze_median_s']:.2f})"
            print(f"{m:<10}{e:<14}{r['samples']:>6}{r['setup_s']:>9.2f}{analyze:>17}{r['analyze_best_cpu_s']:>8.1f}"
                  f"{raw:>17}{mem:>22}")
        if "ratio_innvestigate_over_native" in entry:
            q = entry["ratio_innvestigate_over_native"]
            print(f"{m:<10}ratio innvestigate/native: analyze {q['analyze_best']:.2f}x best, "
                  f"{q['analyze_median']:.2f}x median, {q['analyze_best_cpu']:.2f}x CPU; set-up {q['setup']:.2f}x; "
                  f"peak RSS {q['peak_rss']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
