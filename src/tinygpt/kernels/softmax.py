"""softmax over the last axis, and the attention softmax fused with the scale and the causal mask.

Numba path: rows are split into a few contiguous chunks (one per thread, ``run_chunks``); per row
``row_max`` -> ``exp_row`` (vectorised polynomial exp, see _rows.py) -> ``row_sum`` -> times 1/sum.
The causal version only touches the visible prefix of each row (query row i of Tq sits at absolute
position Tk - Tq + i and sees keys 0..Tk-Tq+i), writes exact zeros after it, and never builds a
(Tq, Tk) mask. Backward: dx = y * (dy - sum(dy * y)) per row (times ``scale`` for the causal one).
``causal_softmax_dropout_*`` add the attention dropout (dropout.py's hash mask) to the same row loop,
bit-identical to the two kernels one after the other, without a third (b, H, T, T) pass each way.

The plain forward only ties torch: per row it makes four passes in L1 (max, exp, sum, scale) where
ATen fuses exp and sum; fusing them here needs a reassociating sum inside the exp loop, and
reassociation there would undo the Cody-Waite split (see _rows.py). The causal forward skips the
masked half of each row, so it beats torch's unfused mask + softmax (bench/kernels.py, "softmax"
rows). Rows are chunked over threads when a chunk gets >= MIN_ELEMS values ((2, 12, 256, 256) makes
6 chunks, claimed dynamically by the threads; see _jit.run_chunks).
"""
import numpy as np

from ._jit import chunk_bounds, chunks, njit, run_chunks
from ._rows import exp_row, row_dot, row_max, row_sum
from .dropout import GOLDEN, _scale, dropout_backward_ref, dropout_forward_ref, keep_hash, threshold

# ---------------------------------------------------------------- NumPy references

def softmax_forward_ref(x):
    # x (..., N) -> y (..., N)
    m = x.max(axis=-1, keepdims=True)
    e = np.exp(x - m)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def softmax_backward_ref(y, dy):
    # dx = y * (dy - sum(dy * y))
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


def causal_mask_ref(tq, tk):
    # (Tq, Tk) bool, True where masked: query row i sits at absolute position tk - tq + i
    return np.arange(tk)[None, :] > (np.arange(tq)[:, None] + (tk - tq))


def causal_softmax_forward_ref(scores, scale):
    # scores (..., Tq, Tk) -> softmax(scale * scores) with future keys exactly 0.0
    tq, tk = scores.shape[-2:]
    _check_causal(tq, tk)
    s = np.where(causal_mask_ref(tq, tk), -np.inf, scores * scale).astype(scores.dtype, copy=False)
    return softmax_forward_ref(s)


def causal_softmax_backward_ref(y, dy, scale):
    # gradient w.r.t. the unscaled scores; masked entries are 0
    dx = softmax_backward_ref(y, dy)
    dx *= scale
    tq, tk = y.shape[-2:]
    _check_causal(tq, tk)
    return np.where(causal_mask_ref(tq, tk), 0.0, dx).astype(y.dtype, copy=False)


def causal_softmax_dropout_forward_ref(scores, scale, p, seed):
    # the attention weights and their dropout (book 3.5.2): z = dropout(y), y = causal softmax;
    # returns z, y and the keep mask (backward needs y and the mask; masked keys are never kept)
    y = causal_softmax_forward_ref(scores, scale)
    z, keep = dropout_forward_ref(y, p, seed)
    return z, y, keep & ~causal_mask_ref(*scores.shape[-2:])


def causal_softmax_dropout_backward_ref(y, keep, dz, scale, p):
    return causal_softmax_backward_ref(y, dropout_backward_ref(dz, keep, p), scale)


def _check_causal(tq, tk):
    if tk < tq:
        raise ValueError(f"causal softmax needs Tk >= Tq, got Tq={tq}, Tk={tk}")


# ---------------------------------------------------------------- Numba kernels

@njit
def _softmax_fwd(x, y, c, nchunks):
    # x, y (R, D); this call does chunk c of the rows
    R, D = x.shape
    one = y.dtype.type(1.0)
    lo, hi = chunk_bounds(c, nchunks, R)
    for i in range(lo, hi):
        yi = y[i]
        m = row_max(x[i], D)
        exp_row(x[i], D, one, m, yi)
        inv = one / row_sum(yi, D)  # one division per row; the reference divides each value (1 ulp)
        for j in range(D):
            yi[j] *= inv


@njit
def _softmax_bwd(y, dy, dx, c, nchunks):
    R, D = y.shape
    lo, hi = chunk_bounds(c, nchunks, R)
    for i in range(lo, hi):
        yi = y[i]; dyi = dy[i]; dxi = dx[i]
        d = row_dot(dyi, yi, D)
        for j in range(D):
            dxi[j] = yi[j] * (dyi[j] - d)


@njit
def _causal_row(xi, scale, yi, n):
    # yi = softmax(scale * xi[:n]), then exact zeros for the n.. masked keys
    zero = yi.dtype.type(0.0)
    one = yi.dtype.type(1.0)
    if scale > zero:  # rounding is monotonic: max(fl(scale*x)) == fl(scale*max(x))
        m = row_max(xi, n) * scale
    else:
        m = xi[0] * scale
        for j in range(1, n):
            v = xi[j] * scale
            m = v if v > m else m
    exp_row(xi, n, scale, m, yi)
    inv = one / row_sum(yi, n)
    for j in range(n):
        yi[j] *= inv
    yi[n:] = zero


@njit
def _causal_row_grad(yi, dyi, scale, dxi, n):
    d = row_dot(dyi, yi, n)
    for j in range(n):
        dxi[j] = yi[j] * (dyi[j] - d) * scale
    dxi[n:] = dxi.dtype.type(0.0)


@njit
def _causal_fwd(x, scale, y, tq, c, nchunks):
    # x, y (R, Tk) with R = batch * Tq; row i sees keys 0 .. Tk - Tq + (i % Tq)
    R, tk = x.shape
    lo, hi = chunk_bounds(c, nchunks, R)
    for i in range(lo, hi):
        _causal_row(x[i], scale, y[i], tk - tq + i % tq + 1)


@njit
def _causal_bwd(y, dy, scale, dx, tq, c, nchunks):
    R, tk = y.shape
    lo, hi = chunk_bounds(c, nchunks, R)
    for i in range(lo, hi):
        _causal_row_grad(y[i], dy[i], scale, dx[i], tk - tq + i % tq + 1)


@njit
def _causal_drop_fwd(x, scale, y, tq, seed, cut, keep_scale, z, keep, c, nchunks):
    # the row softmax as above, then its dropout while the row is still in L1. The mask hashes the
    # flat position exactly as dropout.py does, so z is bit-identical to the two kernels in a row;
    # masked (future) keys get no hash: their weight is 0 either way and their mask bit False
    R, tk = x.shape
    zero = z.dtype.type(0.0)
    lo, hi = chunk_bounds(c, nchunks, R)
    for i in range(lo, hi):
        n = tk - tq + i % tq + 1
        yi, zi, ki = y[i], z[i], keep[i]
        _causal_row(x[i], scale, yi, n)
        s = np.uint64(seed) + np.uint64(i * tk) * GOLDEN
        for j in range(n):
            k = keep_hash(s + np.uint64(j + 1) * GOLDEN) >= cut
            ki[j] = k
            zi[j] = yi[j] * (keep_scale if k else zero)
        ki[n:] = False
        zi[n:] = zero


@njit
def _causal_drop_bwd(y, keep, dz, scale, keep_scale, dx, tq, c, nchunks):
    # dy = dropout backward of dz (kept in dx's row), then the softmax backward in place
    R, tk = y.shape
    zero = dx.dtype.type(0.0)
    lo, hi = chunk_bounds(c, nchunks, R)
    for i in range(lo, hi):
        ki, dzi, dxi = keep[i], dz[i], dx[i]
        for j in range(tk):
            dxi[j] = dzi[j] * (keep_scale if ki[j] else zero)
        _causal_row_grad(y[i], dxi, scale, dxi, tk - tq + i % tq + 1)


# ---------------------------------------------------------------- wrappers

MIN_ELEMS = 1 << 18  # values per chunk: enough work to pay for a thread hand-off (bench/kernels.py)


def _rows2d(a):
    a = np.ascontiguousarray(a)
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


def _nchunks(rows, width):
    return chunks(rows, max(1, MIN_ELEMS // max(1, width)))


def softmax_forward_numba(x):
    x2 = _rows2d(x)
    R, D = x2.shape
    y = np.empty_like(x2)
    if R and D:
        run_chunks(_softmax_fwd, _nchunks(R, D), x2, y)
    return y.reshape(np.shape(x))


def softmax_backward_numba(y, dy):
    y2, dy2 = _rows2d(y), _rows2d(dy)
    dx = np.empty_like(y2)
    if y2.size:
        run_chunks(_softmax_bwd, _nchunks(*y2.shape), y2, dy2, dx)
    return dx.reshape(np.shape(y))


def causal_softmax_forward_numba(scores, scale):
    tq, tk = scores.shape[-2:]
    _check_causal(tq, tk)
    x2 = _rows2d(scores)
    y = np.empty_like(x2)
    if y.size:
        run_chunks(_causal_fwd, _nchunks(*x2.shape), x2, x2.dtype.type(scale), y, tq)
    return y.reshape(scores.shape)


def causal_softmax_backward_numba(y, dy, scale):
    tq, tk = y.shape[-2:]
    _check_causal(tq, tk)
    y2, dy2 = _rows2d(y), _rows2d(dy)
    dx = np.empty_like(y2)
    if dx.size:
        run_chunks(_causal_bwd, _nchunks(*y2.shape), y2, dy2, y2.dtype.type(scale), dx, tq)
    return dx.reshape(y.shape)


def causal_softmax_dropout_forward_numba(scores, scale, p, seed):
    tq, tk = scores.shape[-2:]
    _check_causal(tq, tk)
    x2 = _rows2d(scores)
    y, z = np.empty_like(x2), np.empty_like(x2)
    keep = np.empty(x2.shape, np.bool_)
    if y.size:
        run_chunks(_causal_drop_fwd, _nchunks(*x2.shape), x2, x2.dtype.type(scale), y, tq,
                   np.uint64(seed), threshold(p), _scale(p, x2.dtype), z, keep)
    return z.reshape(scores.shape), y.reshape(scores.shape), keep.reshape(scores.shape)


def causal_softmax_dropout_backward_numba(y, keep, dz, scale, p):
    tq, tk = y.shape[-2:]
    _check_causal(tq, tk)
    y2, dz2 = _rows2d(y), _rows2d(dz)
    dx = np.empty_like(y2)
    if dx.size:
        run_chunks(_causal_drop_bwd, _nchunks(*y2.shape), y2, _rows2d(keep), dz2, y2.dtype.type(scale),
                   _scale(p, y2.dtype), dx, tq)
    return dx.reshape(y.shape)
