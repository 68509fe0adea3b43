"""Compiled MCL iteration (numba): expansion, inflation, pruning and chaos in one pass per column.

Kept in its own module so that numba is imported only when the fast MCL backend is used.
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def _sort_decreasing(idx, val):
    """Sort the pairs (idx[t], val[t]) by decreasing value, in place."""
    if len(val) > 1:
        order = np.argsort(-val)
        si = idx[order]
        sv = val[order]
        idx[:] = si
        val[:] = sv


@nb.njit(cache=True, nogil=True)
def _column(j, indptr, indices, data, inflation, threshold, select, cutoff, acc, touched, out_i, out_v):
    """Expand, inflate, normalise and prune column j; return (nnz kept, chaos of the column).

    Columns are sorted by decreasing value, so the expansion stops reading column k as soon as
    a product ``v * data[q]`` falls below ``cutoff`` times the largest product of the two columns
    (their first entries): every later product of that column is smaller.
    """
    n_t = 0
    if indptr[j + 1] == indptr[j]:
        return 0, 0.0
    vcut = cutoff * data[indptr[j]]  # columns are sorted: their first entry is their largest
    for p in range(indptr[j], indptr[j + 1]):
        k = indices[p]
        v = data[p]
        if v < vcut:  # every product with this or a later entry of column j is below the cutoff
            break
        lim = vcut * data[indptr[k]] / v
        for q in range(indptr[k], indptr[k + 1]):
            w = data[q]
            if w < lim:
                break
            i = indices[q]
            a = acc[i]
            if a == 0.0:  # values are > 0, so 0 means "not touched yet in this column"
                touched[n_t] = i
                n_t += 1
            acc[i] = a + v * w
    # inflation and normalisation
    s = 0.0
    if inflation == 2.0:  # the common case: a product is far cheaper than pow()
        for t in range(n_t):
            i = touched[t]
            x = acc[i] * acc[i]
            acc[i] = x
            s += x
    else:
        for t in range(n_t):
            i = touched[t]
            x = acc[i] ** inflation
            acc[i] = x
            s += x
    if s <= 0.0:
        for t in range(n_t):
            acc[touched[t]] = 0.0
        return 0, 0.0
    # threshold pruning (relative to the column's mass), then top-`select` selection
    m = 0
    best = touched[0]
    for t in range(n_t):
        i = touched[t]
        x = acc[i] / s
        if acc[i] > acc[best]:
            best = i
        if x >= threshold:
            out_i[m] = i
            out_v[m] = x
            m += 1
    for t in range(n_t):  # leave the accumulator clean for the next column
        acc[touched[t]] = 0.0
    if m == 0:  # keep the largest entry at least
        out_i[0] = best
        out_v[0] = 1.0
        m = 1
    if m > select:
        # keep the `select` largest: a linear-time partition finds the cut-off value
        cut = np.partition(out_v[:m], m - select)[m - select]
        ties = select
        for t in range(m):
            if out_v[t] > cut:
                ties -= 1
        kept = 0
        for t in range(m):  # reads position t before writing position kept <= t
            v = out_v[t]
            if v > cut or (v == cut and ties > 0):
                if v == cut:
                    ties -= 1
                out_i[kept] = out_i[t]
                out_v[kept] = v
                kept += 1
        m = kept
    s = 0.0
    for t in range(m):
        s += out_v[t]
    mx = 0.0
    sq = 0.0
    for t in range(m):
        x = out_v[t] / s
        out_v[t] = x
        sq += x * x
        if x > mx:
            mx = x
    _sort_decreasing(out_i[:m], out_v[:m])  # for the next round's early exits
    return m, mx - sq


@nb.njit(cache=True, nogil=True)
def _block(lo, hi, n, indptr, indices, data, inflation, threshold, select, cutoff, width, max_candidates,
           new_i, new_v, counts, chaos):
    # float32 accumulator: half the cache footprint of float64, the precision the mcl program uses
    acc = np.zeros(n, dtype=np.float32)
    touched = np.empty(max_candidates, dtype=np.int64)
    out_i = np.empty(max_candidates, dtype=np.int32)
    out_v = np.empty(max_candidates, dtype=np.float64)
    for j in range(lo, hi):
        m, c = _column(j, indptr, indices, data, inflation, threshold, select, cutoff, acc, touched, out_i, out_v)
        counts[j] = m
        chaos[j] = c
        base = j * width
        for t in range(m):
            new_i[base + t] = out_i[t]
            new_v[base + t] = out_v[t]


@nb.njit(cache=True)
def _compact(n, width, counts, new_i, new_v, out_indptr, out_i, out_v):
    for j in range(n):
        src = j * width
        dst = out_indptr[j]
        for t in range(counts[j]):
            out_i[dst + t] = new_i[src + t]
            out_v[dst + t] = new_v[src + t]


@nb.njit(cache=True)
def sort_columns(indptr, indices, data):
    """Sort each column of a CSC matrix by decreasing value, in place (the kernel's input order)."""
    for j in range(len(indptr) - 1):
        _sort_decreasing(indices[indptr[j]:indptr[j + 1]], data[indptr[j]:indptr[j + 1]])


@nb.njit(cache=True)
def _max_candidates(n, indptr, indices):
    """Upper bound on the nnz of any expanded column (capped at n)."""
    best = 0
    for j in range(n):
        c = 0
        for p in range(indptr[j], indptr[j + 1]):
            k = indices[p]
            c += indptr[k + 1] - indptr[k]
        if c > best:
            best = c
    return min(best, n)


def iterate(indptr, indices, data, n, inflation, threshold, select, n_threads=1, cutoff=0.0):
    """One MCL round on a column-stochastic CSC matrix whose columns are sorted by decreasing value.

    Returns the new CSC arrays (columns sorted the same way) and the largest column chaos.
    """
    import threading

    max_c = max(1, int(_max_candidates(n, indptr, indices)))
    width = min(int(select), max_c)  # late rounds have a few entries per column: small buffers
    new_i = np.empty(n * width, dtype=np.int32)
    new_v = np.empty(n * width, dtype=np.float32)
    counts = np.zeros(n, dtype=np.int64)
    chaos = np.zeros(n, dtype=np.float64)
    # a floor far above float32's smallest normal relative to a product: no product underflows
    # to 0, which the kernel reads as "entry not touched yet"
    cutoff = max(float(cutoff), 1e-20)
    args = (n, indptr, indices, data, float(inflation), float(threshold), int(select), cutoff, width, max_c,
            new_i, new_v, counts, chaos)
    bounds = np.linspace(0, n, max(1, n_threads) + 1).astype(np.int64)
    if n_threads <= 1 or n < 2000:
        _block(0, n, *args)
    else:  # numba releases the GIL (nogil=True): plain threads run the blocks in parallel
        threads = [threading.Thread(target=_block, args=(int(lo), int(hi)) + args) for lo, hi in zip(bounds[:-1], bounds[1:])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    out_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=out_indptr[1:])
    # float32 values and int32 indices halve the memory traffic of the expansion
    out_i = np.empty(int(out_indptr[-1]), dtype=np.int32)
    out_v = np.empty(int(out_indptr[-1]), dtype=np.float32)
    _compact(n, width, counts, new_i, new_v, out_indptr, out_i, out_v)
    return out_indptr, out_i, out_v, float(chaos.max()) if n else 0.0
