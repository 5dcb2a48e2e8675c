"""rmsnorm over the last axis of a 2-D (N, D) input (Qwen3, Llama): forward saves rstd, one-pass backward.

y = x * rstd * scale with rstd = 1 / sqrt(mean(x^2) + eps). The NumPy reference makes four
full-size temporaries (x*x, x*rstd, the product with scale, and in backward more); the Numba
kernels read each row once for its sum of squares and once to write y, and in backward once for
the row sum (and the per-chunk dscale partials, which no two chunks share) and once for dx.
That pays several times over at Qwen3/Llama widths; bench/kernels.py is the place to check it
once it gains "rmsnorm" rows (it has none yet). Layout and threading as layernorm.py: rows in
chunks (``run_chunks``), vectorised sums under ``REDUCTION_FASTMATH`` only.
"""
import numpy as np

from ._jit import chunk_bounds, njit, run_chunks
from ._rows import REDUCTION_FASTMATH, row_dot
from .layernorm import row_chunks

# ---------------------------------------------------------------- NumPy references

def rmsnorm_forward_ref(x, scale, eps):
    # x (N, D), scale (D,) -> y (N, D), rstd (N,)
    rstd = 1.0 / np.sqrt((x * x).mean(axis=-1) + x.dtype.type(eps))
    y = x * rstd[:, None] * scale
    return y, rstd


def rmsnorm_backward_ref(dy, x, scale, rstd):
    # returns dx (N, D), dscale (D,): with xhat = x * rstd and g = dy * scale,
    # dx = rstd * (g - xhat * mean(g * xhat)), dscale = sum over rows of dy * xhat
    xhat = x * rstd[:, None]
    dscale = (dy * xhat).sum(axis=0)
    g = dy * scale
    dx = (g - xhat * (g * xhat).mean(axis=-1, keepdims=True)) * rstd[:, None]
    return dx, dscale


# ---------------------------------------------------------------- Numba kernels


@njit(fastmath=REDUCTION_FASTMATH)
def _bwd_sum(xi, dyi, w, r, dwc):
    # returns sum(g * xhat) of one row; adds its dscale terms to the chunk's partial
    T = xi.dtype.type
    b = T(0.0)
    for j in range(xi.shape[0]):
        xh = xi[j] * r
        b += dyi[j] * w[j] * xh
        dwc[j] += dyi[j] * xh
    return b


@njit
def _rms_fwd(x, w, eps, y, rstd, c, nchunks):
    N, D = x.shape
    T = x.dtype.type
    inv_d = T(1.0 / D)
    lo, hi = chunk_bounds(c, nchunks, N)
    for i in range(lo, hi):
        xi = x[i]; yi = y[i]
        r = T(1.0) / np.sqrt(row_dot(xi, xi, D) * inv_d + eps)  # 1 / sqrt(mean(x^2) + eps)
        for j in range(D):
            yi[j] = xi[j] * r * w[j]
        rstd[i] = r


@njit
def _rms_bwd(dy, x, w, rstd, dx, dw_part, c, nchunks):
    # dw_part (nchunks, D) zeroed: chunk c owns row c
    N, D = x.shape
    T = x.dtype.type
    inv_d = T(1.0 / D)
    lo, hi = chunk_bounds(c, nchunks, N)
    dwc = dw_part[c]
    for i in range(lo, hi):
        xi = x[i]; dyi = dy[i]; dxi = dx[i]
        r = rstd[i]
        b = _bwd_sum(xi, dyi, w, r, dwc) * inv_d
        for j in range(D):
            dxi[j] = (dyi[j] * w[j] - xi[j] * r * b) * r


# ---------------------------------------------------------------- wrappers

def rmsnorm_forward_numba(x, scale, eps):
    x, nc = row_chunks(x, "rmsnorm")  # layout and chunking as layernorm's
    dt = x.dtype
    y = np.empty_like(x)
    rstd = np.empty(x.shape[0], dt)
    if x.size:
        run_chunks(_rms_fwd, nc, x, np.ascontiguousarray(scale, dt), dt.type(eps), y, rstd)
    return y, rstd


def rmsnorm_backward_numba(dy, x, scale, rstd):
    x, nc = row_chunks(x, "rmsnorm")
    dt = x.dtype
    dx = np.empty_like(x)
    dw = np.zeros((nc, x.shape[1]), dt)
    if x.size:
        run_chunks(_rms_bwd, nc, np.ascontiguousarray(dy, dt), x, np.ascontiguousarray(scale, dt),
                   np.ascontiguousarray(rstd, dt), dx, dw)
    return dx, dw.sum(axis=0)
