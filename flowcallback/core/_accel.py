"""Exact cosine kNN search and Markov clustering with ``keras.ops``, for an accelerator.

The same code runs on Keras 3 with the TensorFlow, JAX or PyTorch backend, on the device that
backend computes on (a GPU where it has one). It is what ``knn_backend="keras"`` and
``mcl_backend="keras"`` run, and what ``"auto"`` picks when the Keras backend sees a GPU
(:func:`device`): the kNN graph and MCL otherwise run on the CPU (FAISS and the numba kernel of
:mod:`flowcallback.core._mcl_kernel`), which are faster there.

**kNN** (:func:`search`): exact inner-product search by blocks of query rows, a matrix product of
each block with all rows and ``top_k``: the neighbours FAISS's exact ``IndexFlatIP`` finds, up to
the order of equal similarities.

**MCL** (:func:`mcl_matrix`): the numba kernel's semantics on a dense matrix: the
column-stochastic matrix with self-loops, then rounds of expansion (the square, computed by
blocks of columns so that only two n x n matrices and one block are held), inflation, pruning of
the entries below ``threshold`` times their column's mass (the largest entry is kept when none
is left), selection of each column's ``select`` largest, normalisation; it stops when every
column's chaos (largest entry minus the sum of the squares) is below ``tol``. Dense is the
accelerator's strength: at n = 10,000 a round is 2 x 10^12 floating-point operations, about 30 ms
on one H200 without tensor cores. Dense is also its limit: two n x n float32 matrices, 0.8 GB at
n = 10,000 and 3.2 GB at 20,000 (:func:`max_nodes` checks the device's free memory).

**Precision.** The products are float32. TensorFlow and JAX multiply float32 matrices in TF32 on
recent NVIDIA GPUs by default (10 bits of mantissa); here JAX is told to use full float32 for these
products only (:func:`jax.default_matmul_precision`, a scoped setting), PyTorch does so unless the
process allowed TF32, and TensorFlow cannot be told without changing the process's global state,
which flowcallback never does: where TF32 is on, :func:`device` says so, and ``"auto"`` keeps the CPU.

Written here rather than taken from a library because no maintained package offers MCL on an
accelerator for the three Keras backends (HipMCL is MPI and C++; the GPU MCLs of the literature are
research code).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

__all__ = ["Device", "device", "search", "mcl_matrix", "attractor_links", "max_nodes", "DEVICE_MEMORY_SHARE"]

#: The share of the device's free memory the dense MCL may plan to use.
DEVICE_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class Device:
    """Where ``keras.ops`` computes, as :func:`device` finds it.

    Attributes
    ----------
    backend : str
        The Keras backend (``"tensorflow"``, ``"jax"``, ``"torch"``), or ``""`` without Keras 3.
    accelerator : bool
        Whether it computes on a GPU.
    name : str
        The device, e.g. ``"jax on cuda:0 (NVIDIA H200)"`` or ``"tensorflow on the CPU"``.
    full_precision : bool
        Whether float32 products are computed in full float32 (not TF32).
    free_bytes : int or None
        The device's free memory, where the backend tells it.
    reason : str
        Why the accelerator path is not used, or ``""``.
    """

    backend: str
    accelerator: bool
    name: str
    full_precision: bool
    free_bytes: Optional[int]
    reason: str

    @property
    def usable(self) -> bool:
        """Whether ``"auto"`` picks the accelerator path."""
        return not self.reason


def _keras():
    import keras

    if int(keras.__version__.split(".")[0]) < 3:
        raise ImportError(f"keras.ops needs Keras 3 (installed: Keras {keras.__version__})")
    return keras


def device() -> Device:
    """Where ``keras.ops`` computes now, and whether ``"auto"`` uses it for kNN and MCL.

    Examples
    --------
    >>> d = device()
    >>> d.usable == (d.accelerator and d.full_precision and d.reason == "")
    True
    """
    try:
        keras = _keras()
    except ImportError as exc:
        return Device("", False, "no Keras 3", True, None, f"{exc}; Keras 2 keeps the CPU path")
    backend = keras.backend.backend()
    accelerator, name, full, free = False, f"{backend} on the CPU", True, None
    try:
        if backend == "jax":
            import jax

            d = jax.devices()[0]
            if d.platform == "gpu":
                accelerator, name = True, f"jax on {d} ({getattr(d, 'device_kind', 'GPU')})"
                stats = d.memory_stats() or {}
                if "bytes_limit" in stats:
                    free = int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                accelerator, name = True, f"torch on cuda:0 ({torch.cuda.get_device_name(0)})"
                full = not torch.backends.cuda.matmul.allow_tf32
                free = int(torch.cuda.mem_get_info(0)[0])
        elif backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_logical_devices("GPU")
            if gpus:
                accelerator, name = True, f"tensorflow on {gpus[0].name}"
                full = not tf.config.experimental.tensor_float_32_execution_enabled()
    except Exception as exc:  # a backend that cannot say: the CPU path
        return Device(backend, False, f"{backend} (device unknown)", True, None, f"the device is unknown ({exc})")
    if not accelerator:
        reason = f"the Keras backend ({backend}) sees no GPU"
    elif not full:
        reason = (f"{backend} multiplies float32 matrices in TF32 in this process, and flowcallback does not change "
                  "the process's settings")
    else:
        reason = ""
    return Device(backend, accelerator, name, full, free, reason)


def max_nodes(dev: Device, *, share: float = DEVICE_MEMORY_SHARE) -> int:
    """The largest graph the dense MCL plans for on ``dev``: two n x n float32 matrices and a block of
    columns within ``share`` of its free memory (20,000 nodes where the backend does not tell)."""
    if dev.free_bytes is None:
        return 20_000
    # 2 n^2 (the matrix and the next one) + 4 n b (a block's product, its inflation, masks), b <= n / 4
    return int(np.sqrt(share * dev.free_bytes / 4 / 3))


@contextlib.contextmanager
def _full_precision(backend: str):
    """Full float32 products for the code inside (JAX: a scoped setting; others: as they are)."""
    if backend == "jax":
        import jax

        with jax.default_matmul_precision("float32"):
            yield
    else:
        yield


def search(x: np.ndarray, k: int, *, block: int = 1024) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest inner products of each row of ``x`` with every row (itself included).

    Parameters
    ----------
    x : ndarray of shape (n, d), float32
    k : int
        Results per row, ``1 <= k <= n``.
    block : int, default=1024
        Query rows per product.

    Returns
    -------
    sims : ndarray of shape (n, k), float32
        Decreasing in each row.
    idx : ndarray of shape (n, k), int64

    Examples
    --------
    >>> sims, idx = search(np.eye(3, dtype="float32"), 1)
    >>> idx.ravel().tolist()
    [0, 1, 2]
    """
    keras = _keras()
    ops = keras.ops
    x = np.ascontiguousarray(x, dtype=np.float32)
    sims, idx = [], []
    with _full_precision(keras.backend.backend()):
        xt = ops.transpose(ops.convert_to_tensor(x))
        for start in range(0, len(x), block):
            q = ops.convert_to_tensor(x[start:start + block])
            values, indices = ops.top_k(ops.matmul(q, xt), k, sorted=True)
            sims.append(ops.convert_to_numpy(values))
            idx.append(ops.convert_to_numpy(indices).astype(np.int64))
    return np.concatenate(sims), np.concatenate(idx)


def _tf32(ops, x):
    """``x`` (non-negative) rounded to TF32's 10 bits of mantissa, as tensor cores read float32 operands."""
    positive = x > 0
    safe = ops.where(positive, x, ops.ones_like(x))
    step = ops.power(2.0, ops.floor(ops.log2(safe)) - 10.0)
    return ops.where(positive, ops.round(safe / step) * step, ops.zeros_like(x))


def _round(ops, m, block: int, inflation: float, threshold: float, select: int, tf32: bool = False):
    """One MCL round on the dense column-stochastic ``m``; returns (the next matrix, its largest chaos)."""
    n = int(m.shape[0])
    parts, chaos = [], 0.0
    left = _tf32(ops, m) if tf32 else m
    for start in range(0, n, block):
        e = ops.matmul(left, left[:, start:start + block])  # the columns start.. of M @ M
        x = ops.square(e) if inflation == 2.0 else ops.power(e, inflation)
        s = ops.sum(x, axis=0, keepdims=True)
        kept = ops.where(x >= threshold * s, x, ops.zeros_like(x))
        # a column whose every entry fell below the threshold keeps its largest
        none = ops.logical_and(ops.sum(kept, axis=0, keepdims=True) <= 0, s > 0)
        top = ops.cast(ops.equal(ops.arange(n)[:, None], ops.argmax(x, axis=0)[None, :]), x.dtype)
        kept = ops.where(none, top, kept)
        if select < n:  # each column's `select` largest (ties at the cut all kept)
            cut = ops.top_k(ops.transpose(kept), select, sorted=True)[0][:, -1]
            kept = ops.where(kept >= cut[None, :], kept, ops.zeros_like(kept))
        total = ops.sum(kept, axis=0, keepdims=True)
        kept = kept / ops.where(total > 0, total, ops.ones_like(total))
        c = ops.max(ops.max(kept, axis=0) - ops.sum(ops.square(kept), axis=0))
        chaos = max(chaos, float(ops.convert_to_numpy(c)))
        parts.append(kept)
    return (parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=1)), chaos


def mcl_matrix(graph, *, inflation: float = 2.0, loop_value: float = 1.0, threshold: float = 2.5e-4,
               select: int = 500, iterations: int = 100, tol: float = 1e-4, block: Optional[int] = None,
               emulate_tf32: bool = False) -> np.ndarray:
    """The converged MCL matrix of ``graph`` (dense, on the Keras backend's device).

    Parameters
    ----------
    graph : scipy.sparse matrix or ndarray of shape (n, n)
        Non-negative symmetric weights.
    inflation, loop_value, threshold, select, iterations, tol :
        As for :func:`flowcallback.core.cluster.mcl` (the fast backend's).
    block : int, optional
        Columns per product (default: all, up to 2,048 at a time).
    emulate_tf32 : bool, default=False
        For measurements (benchmarks/accelerator.py): round the products' operands to TF32 first,
        as tensor cores do, to see whether that precision gives the same clusters.

    Returns
    -------
    ndarray of shape (n, n), float32
        Column-stochastic; :func:`attractor_links` reads the clusters from it.
    """
    import scipy.sparse as sp

    keras = _keras()
    ops = keras.ops
    a = graph.toarray() if sp.issparse(graph) else np.array(graph)
    a = a.astype(np.float32) + np.float32(loop_value) * np.eye(len(a), dtype=np.float32)
    col = a.sum(axis=0)
    a /= np.where(col == 0, 1.0, col)[None, :]
    n = len(a)
    block = min(n, 2048) if block is None else max(1, min(int(block), n))
    with _full_precision(keras.backend.backend()):
        m = ops.convert_to_tensor(a)
        del a
        for _ in range(max(1, int(iterations))):
            m, chaos = _round(ops, m, block, float(inflation), float(threshold), int(select), bool(emulate_tf32))
            if chaos < tol:
                break
        return ops.convert_to_numpy(m).astype(np.float32, copy=False)


def attractor_links(m: np.ndarray):
    """The clusters of a converged MCL matrix, read as the fast backend reads them: each sample is
    linked to the row(s) holding most of its column's mass (within 0.1 %), clusters are the weakly
    connected components. Returns the component of each sample (not yet canonical)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    n = len(m)
    colmax = m.max(axis=0)
    rows, cols = np.nonzero((m >= colmax[None, :] * (1 - 1e-3)) & (m > 0))
    rows, cols = np.r_[rows, np.arange(n)], np.r_[cols, np.arange(n)]
    link = sp.csr_matrix((np.ones(len(rows)), (cols, rows)), shape=(n, n))
    return connected_components(link, directed=True, connection="weak")[1]
