"""Causal attention for prompts and training, forward and backward, in blocks ("flash" attention).

softmax(scale * q k^T, causal) v with attention dropout, as `MultiHeadAttention` composes it from
two batched products and `scaled_causal_softmax` (book section 3.5-3.6), in one call:
q (b, H, T, hd); k, v (b, G, L, hd) with G dividing H (query head h reads key/value head
h // (H / G), no copy); query i sits at position L - T + i and sees keys 0 .. L - T + i (the
convention of `scaled_causal_softmax`, so a prompt after a KV cache works). The context comes
back as (b, T, H, hd) C-contiguous, the layout `out_proj` reads (`context.reshape(b, T, H * hd)`
is free); the forward also returns the log-sum-exp of each query row, lse (b, H, T), from which the
backward recomputes the weights: no (T, L) array is kept between forward and backward.
Dropout keeps exactly the weights `scaled_causal_softmax` keeps with the same seed: the hash of
each weight's flat index into the (b, H, T, L) weights (dropout.py's counters). `window` > 0
(sliding-window attention, Gemma 3's local layers): query i also sees no key more than window - 1
positions back; the Numba kernel starts each 4-row group's products at its first visible key.

Numba path. Inputs are read in token-major layout (b, T, H, hd) / (b, L, G, hd): for the
transposed views the fast attention classes pass, that is their own storage, so no copy is made.
Forward work units are (batch, head, block of BQ queries), handed to the threads by `run_chunks`;
a unit copies the keys and values it may see, transposed to (hd, n), computes the scores of its
block only up to each 4-row group's last visible key (blocks above the diagonal are never
touched), takes each row's softmax in full (a block's rows fit in L2, so one pass with the exact
max suffices: no running max and rescaling), drops, and multiplies by the values.
Backward units are (batch, key/value head): each owns its dK and dV rows (no two units write one
element) and, per query head of its group and query block, recomputes P = exp(scale * s - lse),
the dropout mask from the hash, dZ = dO V^T, dS = P * (dZ * keep / (1-p) - rowsum(dO * O)) * scale,
then dQ = dS K, dK^T += Q^T dS, dV^T += dO^T Z.
Two product loops, no BLAS (Numba reaches it only through SciPy): `_mm` keeps C rows in memory and
vectorises over a long row of keys (scores, dZ, dK^T, dV^T); `_mm_dot` holds a 4 x 4 block of
dot products in registers over the keys (the context and dQ, whose rows are only hd long).
Recomputing P from lse costs the backward one score product per block; in exchange no layer
keeps its (b, H, T, L) weights and keep mask from forward to backward, the arrays that set
training's peak memory. Timings against the composed ops and torch: bench/kernels.py's "causal
attention" rows, bench/README.md.
"""
import numpy as np

from ._jit import chunk_bounds, chunks, njit, run_chunks
from ._rows import exp_row, row_dot, row_max, row_sum
from .dropout import GOLDEN, _scale, dropout_backward_ref, dropout_forward_ref, keep_hash, threshold
from .softmax import causal_mask_ref, causal_softmax_backward_ref, softmax_forward_ref

BQ = 64  # queries per block: a block's score rows (BQ x L floats) stay in L2 up to L = 2048


def _check(q, k, v):
    if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape:
        raise ValueError(f"causal attention needs q (b, H, T, hd) and k, v (b, G, L, hd), got "
                         f"{q.shape}, {k.shape}, {v.shape}")
    b, h, t, hd = q.shape
    if k.shape[0] != b or k.shape[3] != hd or k.shape[1] == 0 or h % k.shape[1] or k.shape[2] < t:
        raise ValueError(f"causal attention: q {q.shape} does not match k, v {k.shape} (G must "
                         "divide H, L >= T)")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"causal attention: dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")


# ---------------------------------------------------------------- NumPy references

def _grouped(q, k, v):
    # q (b, H, T, hd) -> (b, G, H/G, T, hd); k, v -> (b, G, 1, L, hd): one product per group
    b, h, t, hd = q.shape
    g = k.shape[1]
    return q.reshape(b, g, h // g, t, hd), k[:, :, None], v[:, :, None]


def _masked_scores(qg, kg, scale, window):
    # scale * q k^T with the future keys (and with `window`, keys window or more back) at -inf
    s = np.matmul(qg, kg.swapaxes(-1, -2)) * scale                      # (b, G, H/G, T, L)
    t, L = s.shape[-2:]
    masked = causal_mask_ref(t, L)
    if window:  # query i (position L - t + i) sees keys L - t + i - window + 1 .. L - t + i
        masked |= np.arange(L)[None, :] <= np.arange(t)[:, None] + (L - t) - window
    return np.where(masked, -np.inf, s).astype(qg.dtype, copy=False)


def causal_attention_forward_ref(q, k, v, scale, dropout_p=0.0, seed=0, window=0):
    # -> context (b, T, H, hd), lse (b, H, T)
    _check(q, k, v)
    b, h, t, hd = q.shape
    qg, kg, vg = _grouped(q, k, v)
    s = _masked_scores(qg, kg, scale, window)                             # (b, G, H/G, T, L)
    weights = softmax_forward_ref(s)
    m = s.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(s - m).sum(axis=-1, keepdims=True)))[..., 0]  # (b, G, H/G, T)
    if dropout_p > 0.0:
        weights, _ = dropout_forward_ref(weights, dropout_p, seed)
    context = np.matmul(weights, vg).reshape(b, h, t, hd)                 # (b, H, T, hd)
    return np.ascontiguousarray(context.transpose(0, 2, 1, 3)), lse.reshape(b, h, t)


def causal_attention_backward_ref(q, k, v, out, lse, dout, scale, dropout_p=0.0, seed=0, window=0):
    # out, dout (b, T, H, hd); -> dq (b, H, T, hd), dk, dv (b, G, L, hd)
    _check(q, k, v)
    b, h, t, hd = q.shape
    g, L = k.shape[1], k.shape[2]
    qg, kg, vg = _grouped(q, k, v)
    lse_g = lse.reshape(b, g, h // g, t, 1)
    weights = np.exp(_masked_scores(qg, kg, scale, window) - lse_g)      # (b, G, H/G, T, L)
    dctx = dout.transpose(0, 2, 1, 3).reshape(qg.shape)                  # (b, G, H/G, T, hd)
    dweights = np.matmul(dctx, vg.swapaxes(-1, -2))                      # (b, G, H/G, T, L)
    dropped = weights
    if dropout_p > 0.0:
        dropped, keep = dropout_forward_ref(weights, dropout_p, seed)
        dweights = dropout_backward_ref(dweights, keep, dropout_p)
    ds = causal_softmax_backward_ref(weights, dweights, scale)           # (b, G, H/G, T, L)
    dq = np.matmul(ds, kg).reshape(b, h, t, hd)
    dk = np.matmul(ds.swapaxes(-1, -2), qg).sum(axis=2)                  # (b, G, L, hd)
    dv = np.matmul(dropped.swapaxes(-1, -2), dctx).sum(axis=2)           # (b, G, L, hd)
    return dq, dk.reshape(b, g, L, hd), dv.reshape(b, g, L, hd)


# ---------------------------------------------------------------- Numba kernels

@njit(fastmath={"contract"})
def _mm(a, b, c, m, kk, n, mode, off, window):
    # c[:m, :n] += a[:m, :kk] @ b[:kk, :n], 2-D C-contiguous, C rows updated in memory over a
    # long n (the keys). mode 1: the 4-row group starting at row i stops the columns at
    # off + i + 4 (row r sees off + r + 1 keys); mode 4: depth row k only reaches the columns
    # < off + k + 1 (b's rows are queries, c's columns keys). Row slices and loops from 0, so LLVM
    # vectorises the column loop (see gemm._tile, whose 4 x 4 block this repeats on purpose: as one
    # shared @njit function it was not inlined into these bounded loops, and this kernel ran ~15%
    # slower, forward 8.0 vs 6.8-7.1 ms, backward 16.3-18.5 vs 14.4-14.7 ms at the GPT-2 shape,
    # while the GEMM was unchanged). With window > 0 the columns also start at the
    # first key the group's (mode 1) or depth row's (mode 4) first query sees: off + i + 1 - window.
    i = 0
    while i < m:
        rows = min(4, m - i)
        nn = min(n, off + i + rows) if mode == 1 else n
        j0 = max(0, off + i + 1 - window) if window > 0 and mode == 1 else 0
        k = 0
        if rows == 4:
            while k + 4 <= kk:
                nk = min(nn, off + k + 4) if mode == 4 else nn
                if window > 0 and mode == 4:
                    j0 = max(0, off + k + 1 - window)
                c0 = c[i, j0:nk]; c1 = c[i + 1, j0:nk]; c2 = c[i + 2, j0:nk]; c3 = c[i + 3, j0:nk]
                r0 = b[k, j0:nk]; r1 = b[k + 1, j0:nk]; r2 = b[k + 2, j0:nk]; r3 = b[k + 3, j0:nk]
                a00 = a[i, k]; a01 = a[i, k + 1]; a02 = a[i, k + 2]; a03 = a[i, k + 3]
                a10 = a[i + 1, k]; a11 = a[i + 1, k + 1]; a12 = a[i + 1, k + 2]; a13 = a[i + 1, k + 3]
                a20 = a[i + 2, k]; a21 = a[i + 2, k + 1]; a22 = a[i + 2, k + 2]; a23 = a[i + 2, k + 3]
                a30 = a[i + 3, k]; a31 = a[i + 3, k + 1]; a32 = a[i + 3, k + 2]; a33 = a[i + 3, k + 3]
                for j in range(nk - j0):
                    b0 = r0[j]; b1 = r1[j]; b2 = r2[j]; b3 = r3[j]
                    c0[j] = c0[j] + a00 * b0 + a01 * b1 + a02 * b2 + a03 * b3
                    c1[j] = c1[j] + a10 * b0 + a11 * b1 + a12 * b2 + a13 * b3
                    c2[j] = c2[j] + a20 * b0 + a21 * b1 + a22 * b2 + a23 * b3
                    c3[j] = c3[j] + a30 * b0 + a31 * b1 + a32 * b2 + a33 * b3
                k += 4
        for r in range(i, i + rows):
            for kr in range(k, kk):
                nk = min(nn, off + kr + 1) if mode == 4 else nn
                if window > 0 and mode == 4:
                    j0 = max(0, off + kr + 1 - window)
                cr = c[r, j0:nk]; br = b[kr, j0:nk]; ar = a[r, kr]
                for j in range(nk - j0):
                    cr[j] = cr[j] + ar * br[j]
        i += 4


@njit(fastmath={"reassoc", "contract"})
def _mm_dot(a, bt, c, m, n, kk, off, window):
    # c[:m, :n] = a[:m, :k] @ bt[:n, :k].T as 4 x 4 blocks of dot products (16 sums held in
    # registers over the long k, no store in the loop); the 4-row group starting at row i stops
    # k at min(kk, off + i + 4) (and with window > 0 starts it at off + i + 1 - window). For the
    # context Z V and dQ = dS K, where n = head_dim is short.
    for i in range(0, m, 4):
        rows = min(4, m - i)
        k1 = min(kk, off + i + rows)
        k0 = max(0, off + i + 1 - window) if window > 0 else 0
        for d in range(0, n, 4):
            if rows < 4 or d + 4 > n:
                for r in range(i, i + rows):
                    for e in range(d, min(n, d + 4)):
                        c[r, e] = row_dot(a[r, k0:], bt[e, k0:], k1 - k0)
                continue
            a0 = a[i, k0:k1]; a1 = a[i + 1, k0:k1]; a2 = a[i + 2, k0:k1]; a3 = a[i + 3, k0:k1]
            b0 = bt[d, k0:k1]; b1 = bt[d + 1, k0:k1]; b2 = bt[d + 2, k0:k1]; b3 = bt[d + 3, k0:k1]
            z = c.dtype.type(0.0)
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = z
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = z
            for j in range(k1 - k0):
                x0 = a0[j]; x1 = a1[j]; x2 = a2[j]; x3 = a3[j]
                y0 = b0[j]; y1 = b1[j]; y2 = b2[j]; y3 = b3[j]
                s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3
                s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3
                s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3
                s30 += x3 * y0; s31 += x3 * y1; s32 += x3 * y2; s33 += x3 * y3
            c[i, d] = s00; c[i, d + 1] = s01; c[i, d + 2] = s02; c[i, d + 3] = s03
            c[i + 1, d] = s10; c[i + 1, d + 1] = s11; c[i + 1, d + 2] = s12; c[i + 1, d + 3] = s13
            c[i + 2, d] = s20; c[i + 2, d + 1] = s21; c[i + 2, d + 2] = s22; c[i + 2, d + 3] = s23
            c[i + 3, d] = s30; c[i + 3, d + 1] = s31; c[i + 3, d + 2] = s32; c[i + 3, d + 3] = s33


@njit
def _load_t(x, bi, g, j0, j1, xT):
    # xT[:, j0:j1] = x[bi, j0:j1, g].T: keys or values of batch bi, head g, transposed to (hd, n)
    for j in range(j0, j1):
        xj = x[bi, j, g]
        for d in range(xj.shape[0]):
            xT[d, j] = xj[d]


@njit
def _keep_row(seed, row, L, n, cut, ks, dst):
    # dst[j] = 1/(1-p) where weight (row, j) of the flat (b, H, T, L) weights is kept, else 0
    zero = dst.dtype.type(0.0)
    s = np.uint64(seed) + np.uint64(row * L) * GOLDEN
    for j in range(n):
        dst[j] = ks if keep_hash(s + np.uint64(j + 1) * GOLDEN) >= cut else zero


@njit
def _fwd(qt, kt, vt, scale, drop, seed, cut, ks, window, out, lse, c, nchunks):
    # qt (b, T, H, hd), kt/vt (b, L, G, hd), out (b, T, H, hd), lse (b, H, T); units (b, h, block)
    nb, t, nh, hd = qt.shape
    L, group = kt.shape[1], nh // kt.shape[2]
    nqb = (t + BQ - 1) // BQ
    T = qt.dtype.type
    kT, vT = np.empty((hd, L), qt.dtype), np.empty((hd, L), qt.dtype)
    qc, oc = np.empty((BQ, hd), qt.dtype), np.empty((BQ, hd), qt.dtype)
    s, p, kp = np.empty((BQ, L), qt.dtype), np.empty((BQ, L), qt.dtype), np.empty(L, qt.dtype)
    loaded, n_loaded = -1, 0              # the (batch, kv head) in kT/vT, and its keys there
    lo, hi = chunk_bounds(c, nchunks, nb * nh * nqb)
    for u in range(lo, hi):
        bi, h, qb = u // (nh * nqb), (u // nqb) % nh, u % nqb
        i0, i1 = qb * BQ, min(t, qb * BQ + BQ)
        m, off = i1 - i0, L - t + i0          # row r of the block sees off + r + 1 keys
        nk = off + m
        if bi * nh + h // group != loaded:    # units run in (b, h, block) order: each kv head's
            loaded, n_loaded = bi * nh + h // group, 0  # keys are copied once per chunk
        if nk > n_loaded:
            _load_t(kt, bi, h // group, n_loaded, nk, kT)
            _load_t(vt, bi, h // group, n_loaded, nk, vT)
            n_loaded = nk
        for r in range(m):
            qc[r] = qt[bi, i0 + r, h]
        s[:m, :nk] = T(0.0)
        _mm(qc, kT, s, m, hd, nk, 1, off, window)
        for r in range(m):
            n = off + r + 1
            row = (bi * nh + h) * t + i0 + r
            lse[bi, h, i0 + r] = _fwd_row(s[r], p[r], kp, n, nk, window, scale, drop, seed, row, L, cut, ks)
        _mm_dot(p, vT, oc, m, hd, nk, off, window)
        for r in range(m):
            out[bi, i0 + r, h] = oc[r]


@njit
def _fwd_row(sr, pr, kp, n, nk, window, scale, drop, seed, row, L, cut, ks):
    # pr = dropout(softmax(scale * sr[lo:n])) with zeros elsewhere in [0, nk); returns the lse
    T = sr.dtype.type
    lo = max(0, n - window) if window > 0 else 0
    x, y = sr[lo:], pr[lo:]
    mx = row_max(x, n - lo) * scale if scale > 0 else x[0] * scale
    if scale <= 0:
        for j in range(1, n - lo):
            mx = max(mx, x[j] * scale)
    exp_row(x, n - lo, scale, mx, y)
    tot = row_sum(y, n - lo)
    inv = T(1.0) / tot
    for j in range(n - lo):
        y[j] *= inv
    if drop:
        _keep_row(seed, row, L, n, cut, ks, kp)
        for j in range(lo, n):
            pr[j] *= kp[j]
    pr[:lo] = T(0.0)
    pr[n:nk] = T(0.0)
    return mx + np.log(tot)


@njit
def _bwd_rows(s, p, dz, kp, qrow0, m, off, L, scale, lse, dlt, drop, seed, cut, ks, window):
    # from the scores s and dZ = dO V^T of a block: p <- Z (the dropped weights), s <- dS
    T = s.dtype.type
    for r in range(m):
        n = off + r + 1
        nk = off + m
        lo = max(0, n - window) if window > 0 else 0
        sr, pr, dzr = s[r], p[r], dz[r]
        exp_row(sr[lo:], n - lo, scale, lse[r], pr[lo:])
        pr[:lo] = T(0.0)
        sr[:lo] = T(0.0)
        if drop:
            _keep_row(seed, qrow0 + r, L, n, cut, ks, kp)
            for j in range(lo, n):
                g = pr[j] * (dzr[j] * kp[j] - dlt[r])
                pr[j] *= kp[j]
                sr[j] = g * scale
        else:
            for j in range(lo, n):
                sr[j] = pr[j] * (dzr[j] - dlt[r]) * scale
        pr[n:nk] = T(0.0)
        sr[n:nk] = T(0.0)


@njit
def _bwd(qt, kt, vt, out, lse, dout, scale, drop, seed, cut, ks, window, dq, dk, dv, c, nchunks):
    # units (b, key/value head): each owns dk[bi, :, g], dv[bi, :, g] and dq of its group's heads
    nb, t, nh, hd = qt.shape
    L, ng = kt.shape[1], kt.shape[2]
    group = nh // ng
    nqb = (t + BQ - 1) // BQ
    T = qt.dtype.type
    kT, vT = np.empty((hd, L), qt.dtype), np.empty((hd, L), qt.dtype)
    dkT, dvT = np.empty((hd, L), qt.dtype), np.empty((hd, L), qt.dtype)
    qc, doc, dqc = np.empty((BQ, hd), qt.dtype), np.empty((BQ, hd), qt.dtype), np.empty((BQ, hd), qt.dtype)
    qT, doT = np.empty((hd, BQ), qt.dtype), np.empty((hd, BQ), qt.dtype)
    s, p, dz = np.empty((BQ, L), qt.dtype), np.empty((BQ, L), qt.dtype), np.empty((BQ, L), qt.dtype)
    kp, dlt, lr = np.empty(L, qt.dtype), np.empty(BQ, qt.dtype), np.empty(BQ, qt.dtype)
    lo, hi = chunk_bounds(c, nchunks, nb * ng)
    for u in range(lo, hi):
        bi, g = u // ng, u % ng
        _load_t(kt, bi, g, 0, L, kT)
        _load_t(vt, bi, g, 0, L, vT)
        dkT[:, :] = T(0.0)
        dvT[:, :] = T(0.0)
        for h in range(g * group, g * group + group):
            for qb in range(nqb):
                i0, i1 = qb * BQ, min(t, qb * BQ + BQ)
                m, off = i1 - i0, L - t + i0
                nk = off + m
                for r in range(m):
                    qc[r] = qt[bi, i0 + r, h]
                    doc[r] = dout[bi, i0 + r, h]
                    dlt[r] = row_dot(doc[r], out[bi, i0 + r, h], hd)
                    lr[r] = lse[bi, h, i0 + r]
                    for d in range(hd):
                        qT[d, r] = qc[r, d]
                        doT[d, r] = doc[r, d]
                s[:m, :nk] = T(0.0)
                dz[:m, :nk] = T(0.0)
                _mm(qc, kT, s, m, hd, nk, 1, off, window)         # scores
                _mm(doc, vT, dz, m, hd, nk, 1, off, window)       # dZ = dO V^T
                _bwd_rows(s, p, dz, kp, (bi * nh + h) * t + i0, m, off, L, scale, lr, dlt,
                          drop, seed, cut, ks, window)            # p <- Z, s <- dS
                _mm_dot(s, kT, dqc, m, hd, nk, off, window)       # dQ = dS K
                for r in range(m):
                    dq[bi, i0 + r, h] = dqc[r]
                _mm(qT, s, dkT, hd, m, nk, 4, off, window)        # dK^T += Q^T dS
                _mm(doT, p, dvT, hd, m, nk, 4, off, window)       # dV^T += dO^T Z
        for j in range(L):
            for d in range(hd):
                dk[bi, j, g, d] = dkT[d, j]
                dv[bi, j, g, d] = dvT[d, j]


# ---------------------------------------------------------------- wrappers

MIN_FLOPS = 1 << 22  # multiply-adds per chunk before a call is split over threads


def _token_major(x):
    # (b, heads, T, hd) -> its (b, T, heads, hd) C-contiguous storage (no copy for a transposed view)
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3))


def _drop_args(dropout_p, seed, dtype):
    return dropout_p > 0.0, np.uint64(seed), threshold(dropout_p), _scale(dropout_p, dtype)


def causal_attention_forward_numba(q, k, v, scale, dropout_p=0.0, seed=0, window=0):
    _check(q, k, v)
    b, h, t, hd = q.shape
    L = k.shape[2]
    qt, kt, vt = _token_major(q), _token_major(k), _token_major(v)
    out = np.empty((b, t, h, hd), q.dtype)
    lse = np.empty((b, h, t), q.dtype)
    units = b * h * ((t + BQ - 1) // BQ)
    if out.size:
        per_unit = 2 * min(t, BQ) * L * hd
        run_chunks(_fwd, chunks(units, max(1, MIN_FLOPS // per_unit)), qt, kt, vt,
                   q.dtype.type(scale), *_drop_args(dropout_p, seed, q.dtype), int(window or 0), out, lse)
    return out, lse


def causal_attention_backward_numba(q, k, v, out, lse, dout, scale, dropout_p=0.0, seed=0, window=0):
    _check(q, k, v)
    b, h, t, hd = q.shape
    g, L = k.shape[1], k.shape[2]
    qt, kt, vt = _token_major(q), _token_major(k), _token_major(v)
    dq = np.empty((b, t, h, hd), q.dtype)
    dk, dv = np.empty((b, L, g, hd), q.dtype), np.empty((b, L, g, hd), q.dtype)
    if dq.size:
        per_unit = 5 * (h // g) * t * L * hd
        run_chunks(_bwd, chunks(b * g, max(1, MIN_FLOPS // per_unit)), qt, kt, vt,
                   np.ascontiguousarray(out), np.ascontiguousarray(lse), np.ascontiguousarray(dout),
                   q.dtype.type(scale), *_drop_args(dropout_p, seed, q.dtype), int(window or 0), dq, dk, dv)
    else:
        dk[...] = 0.0
        dv[...] = 0.0
    return dq.transpose(0, 2, 1, 3), dk.transpose(0, 2, 1, 3), dv.transpose(0, 2, 1, 3)
