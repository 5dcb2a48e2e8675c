"""cross-entropy over the vocabulary: fused log-softmax + NLL with ignore_index.

Numba path: forward reads each logit row once in memory (``row_max``; ``exp_row`` and ``row_sum``
then work on the same row while it is still in L2) and never stores the softmax:
lse = max + log(sum exp(x - max)), nll = lse - x[target]. Backward is one read and one write of
the logits: d = exp(x - lse) written straight into the output row, d[target] -= 1, d *= g with
g = grad_scale / n_valid; ignored rows are zero. ``out=`` may be a reused buffer or ``logits``
itself (in-place: the (512, 50257) float32 gradient is 103 MB, a fresh one page-faults each step).
bench/kernels.py times both paths against torch's log_softmax + nll_loss ("cross-entropy" rows).
"""
import numpy as np

from ._jit import chunk_bounds, chunks, njit, run_chunks
from ._rows import exp_row, row_max, row_sum

# ---------------------------------------------------------------- NumPy references

def check_targets(targets, n, v, ignore_index, check_range=True):
    """The forward checks the targets' shape and range; the backward, handed the targets the
    forward checked, only their shape (the range check runs once per step)."""
    if targets.shape != (n,):
        raise ValueError(f"cross_entropy: targets shape {targets.shape} != ({n},)")
    if not check_range:
        return
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= v))
    if bad.any():
        raise IndexError(f"cross_entropy target {targets[bad][0]} is out of range for {v} classes")


def _mean_loss(nll, n_valid, dtype):
    total = nll.sum()
    loss = total / n_valid if n_valid else total * np.nan  # NaN when all rows ignored, like torch
    return np.asarray(loss, dtype=dtype)


def cross_entropy_forward_ref(logits, targets, ignore_index):
    # logits (N, V), targets (N,) int -> loss 0-d (mean over kept rows), lse (N,)
    n, v = logits.shape
    check_targets(targets, n, v, ignore_index)
    m = logits.max(axis=-1)
    lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=-1))
    valid = targets != ignore_index
    picked = logits[np.arange(n), np.where(valid, targets, 0)]
    nll = np.where(valid, lse - picked, 0.0).astype(logits.dtype, copy=False)
    return _mean_loss(nll, int(valid.sum()), logits.dtype), lse


def cross_entropy_backward_ref(logits, targets, lse, ignore_index, grad_scale, out=None):
    # dlogits = (softmax - onehot) * grad_scale / n_valid; ignored rows 0
    n, v = logits.shape
    check_targets(targets, n, v, ignore_index, check_range=False)
    valid = targets != ignore_index
    n_valid = int(valid.sum())
    d = np.subtract(logits, lse[:, None], out=out)
    if n_valid == 0:
        d[...] = 0.0
        return d
    np.exp(d, out=d)
    rows = np.nonzero(valid)[0]
    d[rows, targets[rows]] -= 1.0
    d *= grad_scale / n_valid
    d[~valid] = 0.0
    return d


# ---------------------------------------------------------------- Numba kernels

@njit
def _ce_fwd(x, targets, ignore_index, lse, nll, buf, c, nchunks):
    # x (N, V); lse, nll (N,); buf (nchunks, V) float scratch (one row per chunk, stays in L2)
    N, V = x.shape
    T = x.dtype.type
    lo, hi = chunk_bounds(c, nchunks, N)
    e = buf[c]
    for i in range(lo, hi):
        xi = x[i]
        m = row_max(xi, V)
        exp_row(xi, V, T(1.0), m, e)
        l = m + np.log(row_sum(e, V))
        lse[i] = l
        t = targets[i]
        nll[i] = T(0.0) if t == ignore_index else l - xi[t]


@njit
def _ce_bwd(x, targets, lse, ignore_index, g, d, c, nchunks):
    # d (N, V) may be x itself
    N, V = x.shape
    T = x.dtype.type
    lo, hi = chunk_bounds(c, nchunks, N)
    for i in range(lo, hi):
        di = d[i]
        t = targets[i]
        if t == ignore_index:
            di[:] = 0.0
            continue
        exp_row(x[i], V, T(1.0), lse[i], di)
        di[t] -= T(1.0)
        for j in range(V):
            di[j] *= g


# ---------------------------------------------------------------- wrappers

MIN_ELEMS = 1 << 18  # values per chunk


def cross_entropy_forward_numba(logits, targets, ignore_index):
    n, v = logits.shape
    targets = np.ascontiguousarray(targets, np.int64)
    check_targets(targets, n, v, ignore_index)
    x = np.ascontiguousarray(logits)
    lse = np.empty(n, x.dtype)
    nll = np.empty(n, x.dtype)
    if x.size:
        nc = chunks(n, MIN_ELEMS // v)
        run_chunks(_ce_fwd, nc, x, targets, ignore_index, lse, nll, np.empty((nc, v), x.dtype))
    return _mean_loss(nll, int((targets != ignore_index).sum()), x.dtype), lse


def cross_entropy_backward_numba(logits, targets, lse, ignore_index, grad_scale, out=None):
    n, v = logits.shape
    targets = np.ascontiguousarray(targets, np.int64)
    check_targets(targets, n, v, ignore_index, check_range=False)
    x = np.ascontiguousarray(logits)
    d = np.empty_like(x) if out is None else out
    if not (d.shape == x.shape and d.dtype == x.dtype and d.flags.c_contiguous):
        raise ValueError("cross_entropy_backward: out must be a C-contiguous array like logits")
    n_valid = int((targets != ignore_index).sum())
    if n_valid == 0:
        d[...] = 0.0
        return d
    if x.size:
        nc = chunks(n, MIN_ELEMS // v)
        run_chunks(_ce_bwd, nc, x, targets, np.ascontiguousarray(lse, x.dtype), ignore_index,
                   x.dtype.type(grad_scale / n_valid), d)
    return d
