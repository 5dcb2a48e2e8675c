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
each weight's flat index into the (b, H, T, L) weights (dropout.py's counters).

Numba path. Inputs are read in token-major layout (b, T, H, hd) / (b, L, G, hd): for the
transposed views the fast attention classes pass, that is their own storage, so no copy is made.
Forward work units are (batch, head, block of BQ queries), handed to the threads by `run_chunks`;
a unit copies the keys it may see into (hd, n) and (n, hd) scratch, computes the scores of its
block against them only up to each 4-row group's last visible key (blocks above the diagonal are
never touched), takes each row's softmax in full (the row of one block fits in L1/L2, so one pass
with the exact max suffices: no running max and rescaling is needed), drops, and multiplies by the
values. The products are `_mm`, a 4 x 4 register-blocked loop (LLVM vectorises the column loop).
Backward units are (batch, key/value head): each owns its dK and dV rows (no two units write one
element) and, per query head of its group and query block, recomputes P = exp(scale * s - lse),
the dropout mask from the hash, dZ = dO V^T, dS = P * (dZ * keep / (1-p) - rowsum(dO * O)) * scale,
then dQ = dS K, dK += dS^T Q, dV += Z^T dO.
Measured (bench/kernels.py "causal attention" rows, bench/README.md): recomputing P from lse in
the backward costs one extra score product per block and saved both the (b, H, T, L) weights and
the keep mask of every layer until backward, the arrays that set training's peak memory.
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


def _masked_scores(qg, kg, scale):
    # scale * q k^T with the future keys at -inf: (b, G, H/G, T, L)
    s = np.matmul(qg, kg.swapaxes(-1, -2)) * scale
    return np.where(causal_mask_ref(*s.shape[-2:]), -np.inf, s).astype(qg.dtype, copy=False)


def causal_attention_forward_ref(q, k, v, scale, dropout_p=0.0, seed=0):
    # -> context (b, T, H, hd), lse (b, H, T)
    _check(q, k, v)
    b, h, t, hd = q.shape
    qg, kg, vg = _grouped(q, k, v)
    s = _masked_scores(qg, kg, scale)                                     # (b, G, H/G, T, L)
    weights = softmax_forward_ref(s)
    m = s.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(s - m).sum(axis=-1, keepdims=True)))[..., 0]  # (b, G, H/G, T)
    if dropout_p > 0.0:
        weights, _ = dropout_forward_ref(weights, dropout_p, seed)
    context = np.matmul(weights, vg).reshape(b, h, t, hd)                 # (b, H, T, hd)
    return np.ascontiguousarray(context.transpose(0, 2, 1, 3)), lse.reshape(b, h, t)


def causal_attention_backward_ref(q, k, v, out, lse, dout, scale, dropout_p=0.0, seed=0):
    # out, dout (b, T, H, hd); -> dq (b, H, T, hd), dk, dv (b, G, L, hd)
    _check(q, k, v)
    b, h, t, hd = q.shape
    g, L = k.shape[1], k.shape[2]
    qg, kg, vg = _grouped(q, k, v)
    lse_g = lse.reshape(b, g, h // g, t, 1)
    weights = np.exp(_masked_scores(qg, kg, scale) - lse_g)              # (b, G, H/G, T, L)
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
def _mm(a, b, c, m, kk, n, mode, off):
    # c[:m, :n] += a[:m, :kk] @ b[:kk, :n], 2-D C-contiguous. For the 4-row group starting at row i,
    # mode 1 stops the columns, mode 2 the depth, at off + i + 4 (row r sees off + r + 1 keys);
    # mode 3 starts the depth at i - off (key rows i.. only get queries r >= i - off). Row slices
    # and loops from 0, so LLVM vectorises the column loop (see gemm._tile).
    i = 0
    while i < m:
        rows = min(4, m - i)
        lim = off + i + rows
        nn = min(n, lim) if mode == 1 else n
        k1 = min(kk, lim) if mode == 2 else kk
        k = max(0, i - off) if mode == 3 else 0
        if rows == 4:
            c0 = c[i, :nn]; c1 = c[i + 1, :nn]; c2 = c[i + 2, :nn]; c3 = c[i + 3, :nn]
            while k + 4 <= k1:
                r0 = b[k, :nn]; r1 = b[k + 1, :nn]; r2 = b[k + 2, :nn]; r3 = b[k + 3, :nn]
                a00 = a[i, k]; a01 = a[i, k + 1]; a02 = a[i, k + 2]; a03 = a[i, k + 3]
                a10 = a[i + 1, k]; a11 = a[i + 1, k + 1]; a12 = a[i + 1, k + 2]; a13 = a[i + 1, k + 3]
                a20 = a[i + 2, k]; a21 = a[i + 2, k + 1]; a22 = a[i + 2, k + 2]; a23 = a[i + 2, k + 3]
                a30 = a[i + 3, k]; a31 = a[i + 3, k + 1]; a32 = a[i + 3, k + 2]; a33 = a[i + 3, k + 3]
                for j in range(nn):
                    b0 = r0[j]; b1 = r1[j]; b2 = r2[j]; b3 = r3[j]
                    c0[j] = c0[j] + a00 * b0 + a01 * b1 + a02 * b2 + a03 * b3
                    c1[j] = c1[j] + a10 * b0 + a11 * b1 + a12 * b2 + a13 * b3
                    c2[j] = c2[j] + a20 * b0 + a21 * b1 + a22 * b2 + a23 * b3
                    c3[j] = c3[j] + a30 * b0 + a31 * b1 + a32 * b2 + a33 * b3
                k += 4
        for r in range(i, i + rows):
            cr = c[r, :nn]
            for kr in range(k, k1):
                ar = a[r, kr]; br = b[kr, :nn]
                for j in range(nn):
                    cr[j] = cr[j] + ar * br[j]
        i += 4


@njit
def _load_kv(kt, vt, bi, g, n, kT, vc):
    # kT[:, :n] = keys^T (hd, n), vc[:n] = values (n, hd) of batch bi, key/value head g
    for j in range(n):
        kj, vj, dst = kt[bi, j, g], vt[bi, j, g], vc[j]
        for d in range(kj.shape[0]):
            kT[d, j] = kj[d]
            dst[d] = vj[d]


@njit
def _keep_row(seed, row, L, n, cut, ks, dst):
    # dst[j] = 1/(1-p) where weight (row, j) of the flat (b, H, T, L) weights is kept, else 0
    zero = dst.dtype.type(0.0)
    s = np.uint64(seed) + np.uint64(row * L) * GOLDEN
    for j in range(n):
        dst[j] = ks if keep_hash(s + np.uint64(j + 1) * GOLDEN) >= cut else zero


@njit
def _fwd(qt, kt, vt, scale, drop, seed, cut, ks, out, lse, c, nchunks):
    # qt (b, T, H, hd), kt/vt (b, L, G, hd), out (b, T, H, hd), lse (b, H, T); units (b, h, block)
    nb, t, nh, hd = qt.shape
    L, group = kt.shape[1], nh // kt.shape[2]
    nqb = (t + BQ - 1) // BQ
    T = qt.dtype.type
    kT, vc = np.empty((hd, L), qt.dtype), np.empty((L, hd), qt.dtype)
    qc, oc = np.empty((BQ, hd), qt.dtype), np.empty((BQ, hd), qt.dtype)
    s, p, kp = np.empty((BQ, L), qt.dtype), np.empty((BQ, L), qt.dtype), np.empty(L, qt.dtype)
    lo, hi = chunk_bounds(c, nchunks, nb * nh * nqb)
    for u in range(lo, hi):
        bi, h, qb = u // (nh * nqb), (u // nqb) % nh, u % nqb
        i0, i1 = qb * BQ, min(t, qb * BQ + BQ)
        m, off = i1 - i0, L - t + i0          # row r of the block sees off + r + 1 keys
        nk = off + m
        _load_kv(kt, vt, bi, h // group, nk, kT, vc)
        for r in range(m):
            qc[r] = qt[bi, i0 + r, h]
        s[:m, :nk] = T(0.0)
        _mm(qc, kT, s, m, hd, nk, 1, off)
        for r in range(m):
            n = off + r + 1
            sr, pr = s[r], p[r]
            mx = row_max(sr, n) * scale if scale > 0 else sr[0] * scale
            if scale <= 0:
                for j in range(1, n):
                    mx = max(mx, sr[j] * scale)
            exp_row(sr, n, scale, mx, pr)
            tot = row_sum(pr, n)
            lse[bi, h, i0 + r] = mx + np.log(tot)
            inv = T(1.0) / tot
            for j in range(n):
                pr[j] *= inv
            if drop:
                _keep_row(seed, (bi * nh + h) * t + i0 + r, L, n, cut, ks, kp)
                for j in range(n):
                    pr[j] *= kp[j]
            pr[n:nk] = T(0.0)
        oc[:m] = T(0.0)
        _mm(p, vc, oc, m, nk, hd, 2, off)
        for r in range(m):
            out[bi, i0 + r, h] = oc[r]


@njit
def _bwd_rows(s, p, dz, kp, qrow0, m, off, L, scale, lse, dlt, drop, seed, cut, ks):
    # from the scores s and dZ = dO V^T of a block: p <- Z (the dropped weights), s <- dS
    T = s.dtype.type
    for r in range(m):
        n = off + r + 1
        nk = off + m
        sr, pr, dzr = s[r], p[r], dz[r]
        exp_row(sr, n, scale, lse[r], pr)
        if drop:
            _keep_row(seed, qrow0 + r, L, n, cut, ks, kp)
            for j in range(n):
                g = pr[j] * (dzr[j] * kp[j] - dlt[r])
                pr[j] *= kp[j]
                sr[j] = g * scale
        else:
            for j in range(n):
                sr[j] = pr[j] * (dzr[j] - dlt[r]) * scale
        pr[n:nk] = T(0.0)
        sr[n:nk] = T(0.0)


@njit
def _bwd(qt, kt, vt, out, lse, dout, scale, drop, seed, cut, ks, dq, dk, dv, c, nchunks):
    # units (b, key/value head): each owns dk[bi, :, g], dv[bi, :, g] and dq of its group's heads
    nb, t, nh, hd = qt.shape
    L, ng = kt.shape[1], kt.shape[2]
    group = nh // ng
    nqb = (t + BQ - 1) // BQ
    T = qt.dtype.type
    kT, vT = np.empty((hd, L), qt.dtype), np.empty((hd, L), qt.dtype)
    kc, vc = np.empty((L, hd), qt.dtype), np.empty((L, hd), qt.dtype)
    dkc, dvc = np.empty((L, hd), qt.dtype), np.empty((L, hd), qt.dtype)
    qc, doc, dqc = np.empty((BQ, hd), qt.dtype), np.empty((BQ, hd), qt.dtype), np.empty((BQ, hd), qt.dtype)
    s, p, dz = np.empty((BQ, L), qt.dtype), np.empty((BQ, L), qt.dtype), np.empty((BQ, L), qt.dtype)
    tr = np.empty((L, BQ), qt.dtype)
    kp, dlt, lr = np.empty(L, qt.dtype), np.empty(BQ, qt.dtype), np.empty(BQ, qt.dtype)
    lo, hi = chunk_bounds(c, nchunks, nb * ng)
    for u in range(lo, hi):
        bi, g = u // ng, u % ng
        _load_kv(kt, vt, bi, g, L, kT, vc)
        _load_kv(vt, kt, bi, g, L, vT, kc)
        dkc[:, :] = T(0.0)
        dvc[:, :] = T(0.0)
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
                s[:m, :nk] = T(0.0)
                dz[:m, :nk] = T(0.0)
                _mm(qc, kT, s, m, hd, nk, 1, off)
                _mm(doc, vT, dz, m, hd, nk, 1, off)
                _bwd_rows(s, p, dz, kp, (bi * nh + h) * t + i0, m, off, L, scale, lr, dlt,
                          drop, seed, cut, ks)
                dqc[:m] = T(0.0)
                _mm(s, kc, dqc, m, nk, hd, 2, off)
                for r in range(m):
                    dq[bi, i0 + r, h] = dqc[r]
                _transpose(s, tr, m, nk)
                _mm(tr, qc, dkc, nk, m, hd, 3, off)
                _transpose(p, tr, m, nk)
                _mm(tr, doc, dvc, nk, m, hd, 3, off)
        for j in range(L):
            dk[bi, j, g] = dkc[j]
            dv[bi, j, g] = dvc[j]


@njit
def _transpose(a, at, m, n):
    # at[:n, :m] = a[:m, :n].T
    for r in range(m):
        ar = a[r]
        for j in range(n):
            at[j, r] = ar[j]


# ---------------------------------------------------------------- wrappers

MIN_FLOPS = 1 << 22  # multiply-adds per chunk before a call is split over threads


def _token_major(x):
    # (b, heads, T, hd) -> its (b, T, heads, hd) C-contiguous storage (no copy for a transposed view)
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3))


def _drop_args(dropout_p, seed, dtype):
    return dropout_p > 0.0, np.uint64(seed), threshold(dropout_p), _scale(dropout_p, dtype)


def causal_attention_forward_numba(q, k, v, scale, dropout_p=0.0, seed=0):
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
                   q.dtype.type(scale), *_drop_args(dropout_p, seed, q.dtype), out, lse)
    return out, lse


def causal_attention_backward_numba(q, k, v, out, lse, dout, scale, dropout_p=0.0, seed=0):
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
                   q.dtype.type(scale), *_drop_args(dropout_p, seed, q.dtype), dq, dk, dv)
    else:
        dk[...] = 0.0
        dv[...] = 0.0
    return dq.transpose(0, 2, 1, 3), dk.transpose(0, 2, 1, 3), dv.transpose(0, 2, 1, 3)
