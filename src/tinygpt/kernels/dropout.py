"""dropout (book section 3.5.2): inverted-dropout mask from a counter-based hash, fused with the rescale.

Value i is dropped when the top 24 bits of splitmix64(seed + (i + 1) * golden) fall below
ceil(p * 2^24), i.e. with probability p to within 2^-24; kept values are multiplied by 1 / (1 - p).
The caller draws `seed` from tinygpt's generator, one per call, so ``manual_seed`` still makes a run
repeatable. Both paths hash the same counters, so their masks are bit-identical (tested).

Why a hash instead of ``Generator.random``: a training step of the book's 124M model draws 12
attention dropouts of 1.6 M values plus 25 smaller ones, and sequential uniforms were a visible
share of the step (bench/kernels.py, "dropout" rows). The hash needs no sequential state, so the
Numba kernel vectorises it and splits it over threads. y = x * (0 or scale), not a select, so a NaN in x stays
NaN as in PyTorch. The mask is kept as bool (1 byte per value, not a float32 copy of x).
"""
import math

import numpy as np

from ._jit import chunk_bounds, chunks, njit, run_chunks

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)


def threshold(p):
    """Integer cut on the 24-bit hash: dropped when below it."""
    return np.uint64(math.ceil(p * (1 << 24)))


def _scale(p, dtype):
    return dtype.type(1.0 / (1.0 - p)) if p < 1.0 else dtype.type(0.0)


# ---------------------------------------------------------------- NumPy references

def dropout_mask_ref(n, p, seed):
    # (n,) bool, True = keep; uint64 arithmetic wraps mod 2^64 as the hash needs
    z = np.uint64(seed) + np.arange(1, n + 1, dtype=np.uint64) * GOLDEN
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(40)) >= threshold(p)


def dropout_forward_ref(x, p, seed):
    # x (...) -> y (...), keep mask (...) bool
    keep = dropout_mask_ref(x.size, p, seed).reshape(x.shape)
    return x * (keep * _scale(p, x.dtype)), keep


def dropout_backward_ref(g, keep, p):
    return g * (keep * _scale(p, g.dtype))


# ---------------------------------------------------------------- Numba kernels

@njit(inline="always")
def keep_hash(z):
    # splitmix64's finaliser of the counter z, top 24 bits (inlined, so loops still vectorise)
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    z ^= z >> np.uint64(31)
    return z >> np.uint64(40)


@njit
def _drop_fwd(x, seed, cut, scale, y, keep, c, nchunks):
    # x, y, keep flat (n,); chunk c of the values. Loops over slices from 0: with range(lo, hi)
    # Numba's negative-index check stops LLVM vectorising the loop
    lo, hi = chunk_bounds(c, nchunks, x.shape[0])
    xs, ys, ks = x[lo:hi], y[lo:hi], keep[lo:hi]
    zero = y.dtype.type(0.0)
    s = np.uint64(seed) + np.uint64(lo) * GOLDEN
    for i in range(hi - lo):
        k = keep_hash(s + np.uint64(i + 1) * GOLDEN) >= cut
        ks[i] = k
        ys[i] = xs[i] * (scale if k else zero)


@njit
def _drop_bwd(g, keep, scale, dx, c, nchunks):
    lo, hi = chunk_bounds(c, nchunks, g.shape[0])
    gs, ks, ds = g[lo:hi], keep[lo:hi], dx[lo:hi]
    zero = dx.dtype.type(0.0)
    for i in range(hi - lo):
        ds[i] = gs[i] * (scale if ks[i] else zero)


# ---------------------------------------------------------------- wrappers

MIN_ELEMS = 1 << 18  # values per chunk


def dropout_forward_numba(x, p, seed):
    x = np.ascontiguousarray(x)
    flat = x.reshape(-1)
    y = np.empty_like(flat)
    keep = np.empty(flat.shape, np.bool_)
    if flat.size:
        run_chunks(_drop_fwd, chunks(flat.size, MIN_ELEMS), flat, np.uint64(seed), threshold(p),
                   _scale(p, x.dtype), y, keep)
    return y.reshape(x.shape), keep.reshape(x.shape)


def dropout_backward_numba(g, keep, p):
    g = np.ascontiguousarray(g)
    flat = g.reshape(-1)
    dx = np.empty_like(flat)
    if flat.size:
        run_chunks(_drop_bwd, chunks(flat.size, MIN_ELEMS), flat, np.ascontiguousarray(keep).reshape(-1),
                   _scale(p, g.dtype), dx)
    return dx.reshape(g.shape)
