"""layernorm over the last axis of a 2-D (N, D) input: forward saves mean and rstd, one-pass backward.

Overflow propagates: a row whose variance overflows (inf input, or values like +-3e38 in float32)
gets rstd NaN, so its output and gradients are NaN, as torch gives for such rows, instead of
rstd = 1/sqrt(inf) = 0 and an output of exactly `shift` that looks healthy. (torch gives zeros
when only the variance overflows and its running deviations do not, e.g. [1e20, -1e20, 0, 5];
tinygpt gives NaN there too: the true result is finite and 0 would hide that it was lost.)

Numba path: rows in a few chunks (``run_chunks``). Forward per row: mean and biased variance with
vectorised sums (``REDUCTION_FASTMATH``: reassoc+contract in the two sum helpers only; float64
agreement with the reference ~1e-15, tested), then y = (x - mean) * rstd * scale + shift. Backward
reads each row once for its two row sums and the per-chunk dscale/dshift partials (no two chunks
write the same element), once more for dx; the partials are summed at the end. GPT-2's layer norms
are short calls, so they stay in one chunk (MIN_ELEMS): a thread hand-off would not pay
(bench/kernels.py, "layernorm" rows).
"""
import numpy as np

from ._jit import chunk_bounds, chunks, njit, run_chunks
from ._rows import REDUCTION_FASTMATH

# ---------------------------------------------------------------- NumPy references

def layernorm_forward_ref(x, scale, shift, eps):
    # x (N, D), scale/shift (D,) -> y (N, D), mean (N,), rstd (N,)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes NaN rows, silently as in torch
        mean = x.mean(axis=-1)
        xc = x - mean[:, None]
        var = (xc * xc).mean(axis=-1)  # biased variance
        rstd = 1.0 / np.sqrt(var + eps)
        rstd[np.isinf(var)] = np.nan   # an overflowed variance: NaN, not rstd 0 and y = shift
        y = xc * rstd[:, None] * scale + shift
    return y, mean, rstd


def layernorm_backward_ref(dy, x, scale, mean, rstd):
    # returns dx (N, D), dscale (D,), dshift (D,)
    xhat = (x - mean[:, None]) * rstd[:, None]
    dshift = dy.sum(axis=0)
    dscale = (dy * xhat).sum(axis=0)
    dxhat = dy * scale
    dx = (dxhat - dxhat.mean(axis=-1, keepdims=True)
          - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)) * rstd[:, None]
    return dx, dscale, dshift


# ---------------------------------------------------------------- Numba kernels

@njit(fastmath=REDUCTION_FASTMATH)
def _mean_var(xi, inv_d):
    # two-pass mean and biased variance of one row (vectorised sums)
    T = xi.dtype.type
    s = T(0.0)
    for j in range(xi.shape[0]):
        s += xi[j]
    m = s * inv_d
    v = T(0.0)
    for j in range(xi.shape[0]):
        d = xi[j] - m
        v += d * d
    return m, v * inv_d


@njit(fastmath=REDUCTION_FASTMATH)
def _bwd_sums(xi, dyi, w, m, r, dwc, dbc):
    # returns sum(dxhat), sum(dxhat * xhat) of one row; adds its dscale/dshift terms to the partials
    T = xi.dtype.type
    a = T(0.0)
    b = T(0.0)
    for j in range(xi.shape[0]):
        xh = (xi[j] - m) * r
        g = dyi[j] * w[j]
        a += g
        b += g * xh
        dwc[j] += dyi[j] * xh
        dbc[j] += dyi[j]
    return a, b


# The elementwise loops below are compiled without fast-math: with FMA contraction dy*w - mean(dy*w)
# is no longer exactly 0 for a constant row, and rstd (up to 1/sqrt(eps)) magnifies that residue.

@njit
def _ln_fwd(x, w, b, eps, y, mean, rstd, c, nchunks):
    N, D = x.shape
    T = x.dtype.type
    inv_d = T(1.0 / D)
    one = T(1.0)
    lo, hi = chunk_bounds(c, nchunks, N)
    for i in range(lo, hi):
        xi = x[i]; yi = y[i]
        m, v = _mean_var(xi, inv_d)
        r = one / np.sqrt(v + eps) if not np.isinf(v) else T(np.nan)  # overflow -> NaN row
        for j in range(D):
            yi[j] = (xi[j] - m) * r * w[j] + b[j]
        mean[i] = m
        rstd[i] = r


@njit
def _ln_bwd(dy, x, w, mean, rstd, dx, dw_part, db_part, c, nchunks):
    # dw_part, db_part (nchunks, D) zeroed: chunk c owns row c
    N, D = x.shape
    T = x.dtype.type
    inv_d = T(1.0 / D)
    lo, hi = chunk_bounds(c, nchunks, N)
    dwc = dw_part[c]; dbc = db_part[c]
    for i in range(lo, hi):
        xi = x[i]; dyi = dy[i]; dxi = dx[i]
        m = mean[i]; r = rstd[i]
        a, bb = _bwd_sums(xi, dyi, w, m, r, dwc, dbc)
        a *= inv_d
        bb *= inv_d
        for j in range(D):
            xh = (xi[j] - m) * r
            dxi[j] = (dyi[j] * w[j] - a - xh * bb) * r


# ---------------------------------------------------------------- wrappers

MIN_ELEMS = 1 << 20  # values per chunk: GPT-2 124M's (512, 768) stays on one thread


def row_chunks(x, what: str):
    """(x as a C-contiguous (N, D) array, the number of row chunks): the set-up every row-norm
    kernel (layernorm here, rmsnorm.py) shares."""
    if x.ndim != 2:
        raise ValueError(f"{what} kernels take a 2-D (N, D) input, got shape {x.shape}")
    x = np.ascontiguousarray(x)
    return x, chunks(x.shape[0], MIN_ELEMS // max(1, x.shape[1]))


def layernorm_forward_numba(x, scale, shift, eps):
    x, nc = row_chunks(x, "layernorm")
    dt = x.dtype
    y = np.empty_like(x)
    mean = np.empty(x.shape[0], dt)
    rstd = np.empty(x.shape[0], dt)
    if x.size:
        run_chunks(_ln_fwd, nc, x, np.ascontiguousarray(scale, dt), np.ascontiguousarray(shift, dt),
                   dt.type(eps), y, mean, rstd)
    return y, mean, rstd


def layernorm_backward_numba(dy, x, scale, mean, rstd):
    x, nc = row_chunks(x, "layernorm")
    dt = x.dtype
    dx = np.empty_like(x)
    dw = np.zeros((nc, x.shape[1]), dt)
    db = np.zeros((nc, x.shape[1]), dt)
    if x.size:
        run_chunks(_ln_bwd, nc, np.ascontiguousarray(dy, dt), x, np.ascontiguousarray(scale, dt),
                   np.ascontiguousarray(mean, dt), np.ascontiguousarray(rstd, dt), dx, dw, db)
    return dx, dw.sum(axis=0), db.sum(axis=0)
