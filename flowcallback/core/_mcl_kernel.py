"""Compiled MCL iteration (numba): expansion, inflation, pruning and chaos in one pass per column.

Kept in its own module so that numba is imported only when the fast MCL backend is used.

The expansion adds products into a dense accumulator of length n (a sparse accumulator, "SPA",
as sparse matrix products usually do) without tracking which rows it touched: the branch that
tracked them cost a third of the time. The nonzero rows are then found by scanning the
accumulator between the smallest and the largest row index the column can reach; the rows are
ordered by reverse Cuthill-McKee (see ``cluster._fast_mcl``), so that range is narrow.

Columns are expanded eight at a time (``_expand_group``): neighbours in RCM order in the first
round, then columns drawn to the same row (``group_order``). Such columns share most of their
support, so each column k of the union of their supports is read once, and each of its entries
adds eight products (zero for the columns that lack k) to the eight sums of its row with one
vector instruction (``_axpy8``); the eight sums of a row sit side by side in the accumulator.
Every sum receives the same products in the same order as in the one-column loop, so the result
is bitwise the same; over a snapshot's 14 graphs the MCL stage is 2.56 times faster than the
one-column loop (1.28 times with the two-column ``_expand_pair``, which now only takes the last
columns of a chunk; docs/performance.md, "Fewer MCL products").
"""
from __future__ import annotations

import threading

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

#: Columns expanded together by :func:`_expand_group` (one 8-lane float32 vector: AVX's width).
LANES = 8


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
def _first_below(data, lo, hi, lim):
    """First position q in [lo, hi) with data[q] < lim (or hi), for data sorted by decreasing value."""
    if data[hi - 1] >= lim:  # the common case: nothing to skip
        return hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if data[mid] < lim:
            hi = mid
        else:
            lo = mid + 1
    return lo


@nb.njit(cache=True, nogil=True)
def _expand(j, indptr, indices, data, row_lo, row_hi, cutoff, acc):
    """Add column j of M @ M into ``acc``; return the range (lo, hi) of rows it can reach.

    With ``cutoff > 0`` columns are sorted by decreasing value, and the expansion reads column k
    only up to the first product ``v * data[q]`` below ``cutoff`` times the largest product of the
    two columns (their first entries): every later product of that column is smaller.
    """
    start = indptr[j]
    end = indptr[j + 1]
    lo = acc.shape[0]
    hi = -1
    if start == end:
        return lo, hi
    vcut = cutoff * data[start]  # 0 when cutoff == 0: nothing is skipped
    for p in range(start, end):
        k = indices[p]
        v = data[p]
        if v < vcut:  # sorted: every product with this or a later entry of column j is below the cutoff
            break
        if indptr[k] == indptr[k + 1]:
            continue
        if row_lo[k] < lo:
            lo = row_lo[k]
        if row_hi[k] > hi:
            hi = row_hi[k]
        q_end = indptr[k + 1]
        if cutoff > 0.0:
            q_end = _first_below(data, indptr[k], q_end, vcut * data[indptr[k]] / v)
        for q in range(indptr[k], q_end):
            acc[indices[q]] += v * data[q]
    return lo, hi


@nb.njit(cache=True, nogil=True)
def _expand_pair(j, j2, indptr, indices, data, row_lo, row_hi, acc2):
    """Add columns j and j2 of M @ M into the interleaved accumulator ``acc2`` (row i of column
    j at ``2 i``, of column j2 at ``2 i + 1``); return the range (lo, hi) of rows they reach.

    Neighbouring columns (in RCM order) share most of their support, so most columns k are needed
    by both: each entry of column k is then read once for two products, and both sums of row i
    sit in the same cache line. Each sum receives the same products in the same order as
    :func:`_expand` adds them (k ascending, then q), so the result is bitwise the same.
    """
    p1 = indptr[j]
    e1 = indptr[j + 1]
    p2 = indptr[j2]
    e2 = indptr[j2 + 1]
    big = acc2.shape[0]
    lo = big
    hi = -1
    while p1 < e1 or p2 < e2:  # merge the two supports, both sorted by row
        k1 = indices[p1] if p1 < e1 else big
        k2 = indices[p2] if p2 < e2 else big
        if k1 == k2:
            k = k1
            v1 = data[p1]
            v2 = data[p2]
            p1 += 1
            p2 += 1
            for q in range(indptr[k], indptr[k + 1]):
                w = data[q]
                i2 = 2 * indices[q]
                acc2[i2] += v1 * w
                acc2[i2 + 1] += v2 * w
        elif k1 < k2:
            k = k1
            v1 = data[p1]
            p1 += 1
            for q in range(indptr[k], indptr[k + 1]):
                acc2[2 * indices[q]] += v1 * data[q]
        else:
            k = k2
            v2 = data[p2]
            p2 += 1
            for q in range(indptr[k], indptr[k + 1]):
                acc2[2 * indices[q] + 1] += v2 * data[q]
        if indptr[k] == indptr[k + 1]:
            continue
        if row_lo[k] < lo:
            lo = row_lo[k]
        if row_hi[k] > hi:
            hi = row_hi[k]
    return lo, hi


@intrinsic
def _axpy8(typingctx, acc, a, w, b, x):
    """``acc[a:a + 8] += w[b:b + 8] * x`` as one vector multiply and one vector add.

    Lane by lane these are the float32 operations of the scalar code (no fused multiply-add, no
    reordering), so every sum is bitwise what it would be column by column. numba does not
    vectorise the eight scalar statements itself (its SLP vectoriser is off by default).
    """
    f32 = types.Array(types.float32, 1, "C")
    if acc != f32 or w != f32 or x != types.float32 or not isinstance(a, types.Integer) \
            or not isinstance(b, types.Integer):
        return None
    sig = types.void(acc, a, w, b, x)

    def codegen(context, builder, signature, args):
        acc_v, a_v, w_v, b_v, x_v = args
        vty = ir.VectorType(ir.FloatType(), LANES)
        acc_p = context.make_array(signature.args[0])(context, builder, acc_v).data
        w_p = context.make_array(signature.args[2])(context, builder, w_v).data
        pa = builder.bitcast(builder.gep(acc_p, [a_v]), vty.as_pointer())
        pw = builder.bitcast(builder.gep(w_p, [b_v]), vty.as_pointer())
        xv = builder.insert_element(ir.Constant(vty, ir.Undefined), x_v, ir.Constant(ir.IntType(32), 0))
        xv = builder.shuffle_vector(xv, ir.Constant(vty, ir.Undefined),
                                    ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
        builder.store(builder.fadd(builder.load(pa, align=4), builder.fmul(builder.load(pw, align=4), xv)), pa,
                      align=4)
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True)
def _expand_group(cols, indptr, indices, data, row_lo, row_hi, acc8, w8, mark, klist):
    """Add the eight columns ``cols`` of M @ M into the interleaved accumulator ``acc8`` (row i of
    column ``cols[g]`` at ``8 i + g``); return the range (lo, hi) of rows they reach.

    Every column k in the union of the eight supports is read once: its entry x in row i adds
    the vector ``w8[8 k : 8 k + 8] * x`` (the eight columns' weights of k, zero where a column
    lacks k) to the eight sums of row i, with one vector instruction. The zero products add +0.0,
    which changes no sum, and the others arrive in the order of :func:`_expand` (k ascending,
    then q), so the result is bitwise the same. ``w8`` (8 n) and ``mark`` (n) are zero on entry
    and on exit; ``klist`` is scratch of length n.
    """
    kmin = acc8.shape[0]
    kmax = -1
    for g in range(LANES):  # scatter the weights, mark the union of the supports
        for p in range(indptr[cols[g]], indptr[cols[g] + 1]):
            k = indices[p]
            w8[LANES * k + g] = data[p]
            mark[k] = 1
            kmin = min(kmin, k)  # (the columns' rows are sorted in the kernel; not assumed here)
            kmax = max(kmax, k)
    m = 0
    for k in range(kmin, kmax + 1):  # the union, ascending (RCM keeps kmax - kmin small)
        if mark[k]:
            mark[k] = 0
            klist[m] = k
            m += 1
    lo = acc8.shape[0]
    hi = -1
    for t in range(m):
        k = klist[t]
        b = LANES * k
        if indptr[k] < indptr[k + 1]:
            lo = min(lo, row_lo[k])
            hi = max(hi, row_hi[k])
            for q in range(indptr[k], indptr[k + 1]):
                _axpy8(acc8, LANES * np.int64(indices[q]), w8, b, data[q])
        for g in range(LANES):
            w8[b + g] = 0.0
    return lo, hi


@nb.njit(cache=True, nogil=True)
def _gather(acc, stride, offset, lo, hi, inflation, out_i, out_v):
    """Collect the nonzero sums ``acc[stride * i + offset]`` for rows lo..hi, inflated, into
    (out_i, out_v), clearing them for the next column; return (count, sum of the inflated values)."""
    m = 0
    s = 0.0
    square = inflation == 2.0  # the common case: a product is far cheaper than pow()
    for i in range(lo, hi + 1):
        a = acc[stride * i + offset]
        if a != 0.0:
            acc[stride * i + offset] = 0.0
            x = a * a if square else a ** inflation
            out_i[m] = i
            out_v[m] = x
            s += x
            m += 1
    return m, s


@nb.njit(cache=True, nogil=True)
def _gather_group(acc8, lo, hi, inflation, out_i8, out_v8, ms, ss):
    """:func:`_gather` of the eight interleaved columns of ``acc8`` in one pass over rows lo..hi
    (eight passes read every accumulator line eight times): column b's nonzero sums go to
    ``out_i8[b]``, ``out_v8[b]``, their count to ``ms[b]`` and their sum to ``ss[b]``, each
    computed exactly as :func:`_gather` computes it."""
    square = inflation == 2.0
    for b in range(LANES):
        ms[b] = 0
        ss[b] = 0.0
    for i in range(lo, hi + 1):
        base = LANES * i
        for b in range(LANES):
            a = acc8[base + b]
            if a != 0.0:
                acc8[base + b] = 0.0
                x = a * a if square else a ** inflation
                t = ms[b]
                out_i8[b, t] = i
                out_v8[b, t] = x
                ss[b] += x
                ms[b] = t + 1


@nb.njit(cache=True, nogil=True)
def _prune(m, s, threshold, select, cutoff, out_i, out_v):
    """Prune, select and normalise the inflated column in (out_i[:m], out_v[:m]) whose sum is s;
    return (nnz kept, chaos of the column)."""
    if m == 0 or s <= 0.0:
        return 0, 0.0
    # threshold pruning (relative to the column's mass), then top-`select` selection
    t_abs = threshold * s
    best_i = out_i[0]
    best_x = out_v[0]
    kept = 0
    for t in range(m):  # reads position t before writing position kept <= t
        x = out_v[t]
        i = out_i[t]
        if x > best_x:
            best_x = x
            best_i = i
        if x >= t_abs:
            out_i[kept] = i
            out_v[kept] = x
            kept += 1
    if kept == 0:  # keep the largest entry at least
        out_i[0] = best_i
        out_v[0] = 1.0
        kept = 1
    m = kept
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
    if cutoff > 0.0:
        _sort_decreasing(out_i[:m], out_v[:m])  # for the next round's early exits
    return m, mx - sq




@nb.njit(cache=True, nogil=True)
def _column(j, indptr, indices, data, row_lo, row_hi, inflation, threshold, select, cutoff, acc, out_i, out_v):
    """Expand, inflate, normalise and prune column j; return (nnz kept, chaos of the column)."""
    lo, hi = _expand(j, indptr, indices, data, row_lo, row_hi, cutoff, acc)
    m, s = _gather(acc, 1, 0, lo, hi, inflation, out_i, out_v)
    return _prune(m, s, threshold, select, cutoff, out_i, out_v)


@nb.njit(cache=True, nogil=True)
def _store(j, m, c, width, new_i, new_v, counts, chaos, out_i, out_v):
    counts[j] = m
    chaos[j] = c
    base = j * width
    for t in range(m):
        new_i[base + t] = out_i[t]
        new_v[base + t] = out_v[t]


@nb.njit(cache=True, nogil=True)
def _block(lo, hi, order, indptr, indices, data, row_lo, row_hi, inflation, threshold, select, cutoff, group, width,
           new_i, new_v, counts, chaos, acc, acc2, acc8, w8, mark, klist, out_i, out_v, out_i8, out_v8):
    """Columns ``order[lo:hi]``: eight at a time (``group`` 8), then in pairs (``group`` >= 2),
    then one at a time."""
    ms = np.zeros(LANES, dtype=np.int64)
    ss = np.zeros(LANES, dtype=np.float64)
    t = lo
    while t < hi:
        if group == LANES and t + LANES <= hi:  # eight columns together (see _expand_group)
            cols = order[t:t + LANES]
            r_lo, r_hi = _expand_group(cols, indptr, indices, data, row_lo, row_hi, acc8, w8, mark, klist)
            _gather_group(acc8, r_lo, r_hi, inflation, out_i8, out_v8, ms, ss)
            for b in range(LANES):
                m, c = _prune(ms[b], ss[b], threshold, select, cutoff, out_i8[b], out_v8[b])
                _store(cols[b], m, c, width, new_i, new_v, counts, chaos, out_i8[b], out_v8[b])
            t += LANES
        elif group >= 2 and t + 1 < hi:  # two columns together (see _expand_pair)
            j = order[t]
            j2 = order[t + 1]
            r_lo, r_hi = _expand_pair(j, j2, indptr, indices, data, row_lo, row_hi, acc2)
            for b in range(2):
                m, s = _gather(acc2, 2, b, r_lo, r_hi, inflation, out_i, out_v)
                m, c = _prune(m, s, threshold, select, cutoff, out_i, out_v)
                _store(j if b == 0 else j2, m, c, width, new_i, new_v, counts, chaos, out_i, out_v)
            t += 2
        else:
            j = order[t]
            m, c = _column(j, indptr, indices, data, row_lo, row_hi, inflation, threshold, select, cutoff, acc,
                           out_i, out_v)
            _store(j, m, c, width, new_i, new_v, counts, chaos, out_i, out_v)
            t += 1


@nb.njit(cache=True)
def group_order(n, indptr, indices, data):
    """The order in which the kernel takes columns eight at a time: by the row of their largest
    entry off the diagonal (their column's own row if none), ties by column, so that columns
    drawn to the same rows, whose supports overlap most, are expanded together. Eight RCM
    neighbours read 1.6 times as many entries from round 3 on, on a conv2 graph
    (docs/performance.md). Columns are independent, so the order changes no result."""
    key = np.empty(n, dtype=np.int64)
    for j in range(n):
        best = -1.0
        arg = j
        for p in range(indptr[j], indptr[j + 1]):
            i = indices[p]
            if i != j and data[p] > best:  # the first (lowest) row among equal values
                best = data[p]
                arg = i
        key[j] = arg
    return np.argsort(key, kind="mergesort")  # stable: ties by column


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
def _scan(n, indptr, indices):
    """Per column: smallest and largest row index; and an upper bound on any expanded column's nnz."""
    row_lo = np.empty(n, dtype=np.int64)
    row_hi = np.empty(n, dtype=np.int64)
    for j in range(n):
        lo = n
        hi = -1
        for p in range(indptr[j], indptr[j + 1]):
            i = indices[p]
            if i < lo:
                lo = i
            if i > hi:
                hi = i
        row_lo[j] = lo
        row_hi[j] = hi
    best = 0
    for j in range(n):
        c = 0
        for p in range(indptr[j], indptr[j + 1]):
            k = indices[p]
            c += indptr[k + 1] - indptr[k]
        if c > best:
            best = c
    return row_lo, row_hi, min(best, n)


def _zeros_aligned(size, dtype, align=64):
    """Zeros whose first element sits on a cache-line boundary: a vector of 8 float32 at
    ``8 i`` then never straddles two cache lines."""
    itemsize = np.dtype(dtype).itemsize
    buf = np.zeros(size + align // itemsize, dtype=dtype)
    skip = (-buf.ctypes.data % align) // itemsize
    return buf[skip:skip + size]


def iterate(indptr, indices, data, n, inflation, threshold, select, n_threads=1, cutoff=0.0, group=LANES,
            ordered=True):
    """One MCL round on a column-stochastic CSC matrix (columns sorted by decreasing value if cutoff > 0).

    ``group`` (with ``cutoff == 0``) is how many neighbouring columns are expanded together: 8
    (the default, :func:`_expand_group`), 2 (:func:`_expand_pair`) or 1 (one column at a time,
    the kernel before issue 21). All three give bitwise the same arrays (with rows sorted in each
    column, as the kernel keeps them); 8 is the fastest (docs/performance.md, "Fewer MCL products").
    With ``group`` 8 and ``ordered``, the groups are taken in :func:`group_order` rather than in
    the matrix's order; that pays from the second round on (in the first, the matrix is the graph
    itself and RCM order groups its columns better). Neither changes the result.

    Returns the new CSC arrays (columns sorted the same way) and the largest column chaos.
    """
    if group not in (1, 2, LANES):
        raise ValueError(f"group: expected 1, 2 or {LANES}, got {group!r}")
    row_lo, row_hi, max_c = _scan(n, indptr, indices)
    max_c = max(1, int(max_c))
    width = min(int(select), max_c)  # late rounds have a few entries per column: small buffers
    new_i = np.empty(n * width, dtype=np.int32)
    new_v = np.empty(n * width, dtype=np.float32)
    counts = np.zeros(n, dtype=np.int64)
    chaos = np.zeros(n, dtype=np.float64)
    group = 1 if cutoff > 0 else int(group)  # the cutoff's early exits are per column
    order = group_order(n, indptr, indices, data) if group == LANES and ordered else np.arange(n, dtype=np.int64)
    args = (order, indptr, indices, data, row_lo, row_hi, float(inflation), float(threshold), int(select),
            float(cutoff), group, width, new_i, new_v, counts, chaos)

    def work(chunks):
        # per-thread buffers; the float32 accumulator has half the cache footprint of float64,
        # and is the precision the mcl program uses
        acc = np.zeros(n, dtype=np.float32)
        acc2 = np.zeros(2 * n if group >= 2 else 0, dtype=np.float32)  # two columns' sums, interleaved
        big = group == LANES
        acc8 = _zeros_aligned(LANES * n if big else 0, np.float32)  # eight columns' sums, interleaved
        w8 = _zeros_aligned(LANES * n if big else 0, np.float32)  # their weights of each column k
        mark = np.zeros(n if big else 0, dtype=np.uint8)
        klist = np.empty(n if big else 0, dtype=np.int64)
        out_i = np.empty(max_c, dtype=np.int32)
        out_v = np.empty(max_c, dtype=np.float64)
        out_i8 = np.empty((LANES, max_c) if big else (0, 0), dtype=np.int32)  # the eight columns' gathers
        out_v8 = np.empty((LANES, max_c) if big else (0, 0), dtype=np.float64)
        for lo, hi in chunks:
            _block(lo, hi, *args, acc, acc2, acc8, w8, mark, klist, out_i, out_v, out_i8, out_v8)

    n_threads = max(1, int(n_threads))
    if n_threads == 1 or n < 2000:
        work([(0, n)])
    else:
        # Columns differ in cost, so threads take small chunks from a shared queue (with one fixed
        # half each, a thread would sit idle for 10-15 % of a round). numba releases the GIL
        # (nogil=True), so plain threads run the chunks in parallel.
        edges = np.linspace(0, n, 16 * n_threads + 1).astype(np.int64)
        queue = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
        lock = threading.Lock()

        def chunks():
            while True:
                with lock:
                    if not queue:
                        return
                    item = queue.pop(0)
                yield item

        threads = [threading.Thread(target=work, args=(chunks(),)) for _ in range(n_threads)]
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
