"""kNN and MCL with keras.ops (an accelerator) against FAISS and the numba kernel (issue 23).

    # the graphs of one snapshot (LeNet5, MNIST, every layer, activations and LRP), as
    # benchmarks/mcl_speed.py builds them, saved; --layers keeps some (64 MiB carry at most)
    python benchmarks/accelerator.py --samples 10000 --save /tmp/graphs.npz [--layers activations/conv2,...]
    # then, on the machine to measure (Keras on JAX on a GPU; no TensorFlow needed there):
    KERAS_BACKEND=jax python benchmarks/accelerator.py --graphs /tmp/graphs.npz --out accelerator_gpu.json
    # or both at once, on the CPU:
    python benchmarks/accelerator.py --samples 2000 --out accelerator_cpu_2000.json

For each graph it prints: MCL seconds with keras.ops on the Keras backend's device (the second of
two runs: the first compiles), the numba kernel on every core of the machine and on two (the
process pinned to two CPUs, as ``taskset -c 0,1``), the ARI between them, the ARI of keras.ops with
its products' operands rounded to TF32 (emulated: what tensor cores would compute) against full
float32, and the peak device memory where the backend reports it. Then the kNN search at n x 128
(random unit vectors): keras.ops against FAISS's exact search (NumPy's where FAISS is not
installed, as on the GPU machine), and the share of identical neighbour lists.

It imports only the kernels (``flowcallback.core._accel``, ``flowcallback.core._mcl_kernel``), NumPy,
SciPy, scikit-learn and numba when given ``--graphs``, so that it runs where TensorFlow is missing.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))


def _peak_device_bytes():
    """The device's peak memory in use so far, where the Keras backend reports it, else None."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
        if backend == "torch":
            import torch

            return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
        if backend == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.get_memory_info("GPU:0")["peak"] if tf.config.list_logical_devices(
                "GPU") else None
    except Exception:
        return None
    return None


def _numba_mcl(g, n_threads):
    """The fast backend's clustering at its defaults (the callback's MCL on the CPU)."""
    from flowcallback.core.cluster import _fast_mcl

    return _fast_mcl(g.tocsc(), 2.0, 1.0, 100, 2.5e-4, 500, n_threads, 1e-4, 0.0)


def _keras_mcl(g, **kw):
    from flowcallback.core import _accel
    from flowcallback.core.cluster import canonical_labels

    return canonical_labels(_accel.attractor_links(_accel.mcl_matrix(g, **kw)))


def _timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def _pinned(cpus, fn, *args, **kw):
    """``fn`` run with the process pinned to ``cpus`` (as taskset), restored after."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        return _timed(fn, *args, **kw)
    finally:
        os.sched_setaffinity(0, before)


def _exact_search(x, k, block=2048):
    """Exact inner-product top-``k`` on the CPU with NumPy (float64 products), the reference where
    FAISS is not installed (the GPU machine has none)."""
    sims = np.empty((len(x), k), dtype=np.float32)
    idx = np.empty((len(x), k), dtype=np.int64)
    xd = x.astype(np.float64)
    for i in range(0, len(x), block):
        s = xd[i:i + block] @ xd.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")
        idx[i:i + block] = np.take_along_axis(top, order, axis=1)
        sims[i:i + block] = np.take_along_axis(s, idx[i:i + block], axis=1)
    return sims, idx


def knn_figures(n: int, dim: int = 128, k: int = 100) -> dict:
    """keras.ops' exact search against FAISS's exact search (``IndexFlatIP``), or against NumPy's
    where FAISS is missing (``reference`` says which)."""
    from flowcallback.core import _accel

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    _accel.search(x[:256], k + 1)  # compile
    (sims, idx), keras_s = _timed(_accel.search, x, k + 1)
    try:
        import faiss
    except ImportError:
        reference = "numpy"
        (fs, fi), ref_s = _timed(_exact_search, x, k + 1)
    else:
        reference = "faiss"
        ix = faiss.IndexFlatIP(dim)
        ix.add(x)
        (fs, fi), ref_s = _timed(ix.search, x, k + 1)
    return {"n": n, "dim": dim, "k": k, "keras_seconds": keras_s, "reference": reference,
            "reference_seconds": ref_s, "faiss_seconds": ref_s if reference == "faiss" else None,
            "same_lists": float((np.sort(idx, axis=1) == np.sort(fi, axis=1)).all(axis=1).mean()),
            "max_similarity_difference": float(np.abs(sims - fs).max())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--graphs", help="an npz written by --save (skips the training)")
    ap.add_argument("--save", help="write the graphs to this npz and stop")
    ap.add_argument("--samples", type=int, default=2000, help="held-out samples of the snapshot (graph size)")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--layers", default=None, help="comma-separated graph names to keep (analysis/layer)")
    ap.add_argument("--knn-samples", type=int, default=None, help="n of the kNN search (default: --samples)")
    ap.add_argument("--no-tf32", action="store_true", help="skip the emulated TF32 run")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from mcl_speed import load_graphs, save_graphs

    if args.graphs:
        graphs = load_graphs(args.graphs)
    else:
        from mcl_speed import build_graphs

        graphs = build_graphs(samples=args.samples, k=args.k)
    if args.layers:
        keep = args.layers.split(",")
        graphs = {name: g for name, g in graphs.items() if name in keep}
    if args.save:
        save_graphs(args.save, graphs)
        print(f"{len(graphs)} graphs written to {args.save} ({os.path.getsize(args.save) / 2**20:.1f} MiB)")
        return

    import keras
    from sklearn.metrics import adjusted_rand_score

    from flowcallback.core import _accel

    dev = _accel.device()
    cores = sorted(os.sched_getaffinity(0))
    print(f"keras {keras.__version__} on {dev.name}; {len(cores)} CPUs")
    rows = []
    _numba_mcl(next(iter(graphs.values())), 2)  # the kernel's compiled code loaded (numba's cache)
    for name, g in sorted(graphs.items()):
        n = g.shape[0]
        _keras_mcl(g)  # compile, allocate
        dense, keras_s = _timed(_keras_mcl, g)
        peak = _peak_device_bytes()
        fast_all, all_s = _timed(_numba_mcl, g, min(len(cores), 64))
        fast_two, two_s = _pinned(set(cores[:2]), _numba_mcl, g, 2)
        row = {"graph": name, "n": n, "nnz": int(g.nnz), "keras_seconds": keras_s, "numba_all_seconds": all_s,
               "numba_2_seconds": two_s, "cpus": len(cores), "ari_keras_numba": adjusted_rand_score(fast_all, dense),
               "ari_numba_all_2": adjusted_rand_score(fast_all, fast_two), "clusters": int(dense.max() + 1),
               "peak_device_bytes": peak}
        if not args.no_tf32:
            tf32 = _keras_mcl(g, emulate_tf32=True)
            row["ari_tf32_float32"] = adjusted_rand_score(dense, tf32)
        rows.append(row)
        print(f"{name:28s} n={n:6d} keras {keras_s:7.2f} s  numba {len(cores)} cores {all_s:6.2f} s, 2 cores "
              f"{two_s:6.2f} s  ARI {row['ari_keras_numba']:.4f}"
              + (f"  TF32 ARI {row['ari_tf32_float32']:.4f}" if "ari_tf32_float32" in row else "")
              + (f"  peak {peak / 2**20:.0f} MiB" if peak else ""))
    total = {key: sum(r[key] for r in rows) for key in ("keras_seconds", "numba_all_seconds", "numba_2_seconds")}
    print(f"all graphs: keras {total['keras_seconds']:.1f} s, numba {len(cores)} cores {total['numba_all_seconds']:.1f}"
          f" s, 2 cores {total['numba_2_seconds']:.1f} s; lowest ARI {min(r['ari_keras_numba'] for r in rows):.4f}")
    knn_row = knn_figures(args.knn_samples or max(r["n"] for r in rows), k=args.k)
    print(f"kNN {knn_row['n']} x {knn_row['dim']}, k={knn_row['k']}: keras {knn_row['keras_seconds']:.2f} s, "
          f"{knn_row['reference']} (exact, CPU) {knn_row['reference_seconds']:.2f} s, identical lists "
          f"{knn_row['same_lists']:.2%}")
    if args.out:
        from _common import write_json

        print(write_json(args.out, {"device": dev.name, "keras": keras.__version__, "graphs": rows, "total": total,
                                    "knn": knn_row}))


if __name__ == "__main__":
    main()
