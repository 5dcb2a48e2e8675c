"""Attention over a KV cache in one call: softmax(q k^T * scale, causal) v, for generation.

Book section 3.6's attention (queries against keys, the scaled causal softmax, the weighted sum of
values) for the decoding loop of chapter 4.7 / 5.3 with a KV cache: q (b, H, Tq, hd) holds the Tq
newest tokens, k and v the cache buffers (b, G, max_len, hd), of which the first `length`
positions are filled; query i sits at absolute position length - Tq + i and sees keys
0 .. length - Tq + i. G = H for GPT-2; for grouped-query attention (Qwen3, Llama 3) G divides H
and query head h reads key/value head h // (H / G), as `ops.grouped_query_attention` pairs them.

`starts` (optional, (b,) ints): row r's first valid key, for a batch of sequences of different
lengths held right-aligned in one cache (model/batched.py: left padding). Row r's query i then
sees keys starts[r] .. length - Tq + i only; the padding before starts[r] is never read. Without
it every row starts at 0.

Why a kernel: decoding one token through the composed ops (transpose, two batched products, the
causal softmax, transpose, reshape) is almost all dispatch: np.matmul runs one tiny BLAS call per
head (bench/kernels.py "cached attention", bench/generate.py). The kernel does the whole layer's attention
in one call, reading each cached key and value once, and writes the context straight in the
(b, Tq, H, hd) layout `out_proj` wants. No gradient: a KV cache is only used under no_grad.
The softmax is the causal-softmax kernel's own row routine, so the weights match it exactly; only
the dot products' summation order differs from BLAS's.
"""
import numpy as np

from ._jit import chunk_bounds, chunks, njit, run_chunks
from ._rows import row_dot
from .softmax import _causal_row, causal_softmax_forward_ref

MIN_ELEMS = 1 << 18  # cached key/value values read per chunk before a call is split over threads


def _check(q, k, v, length, starts=None):
    b, h, tq, hd = q.shape
    if k.shape != v.shape or k.shape[0] != b or not 0 < k.shape[1] <= h or h % k.shape[1] or k.shape[3] != hd:
        raise ValueError(f"cached_attention: queries {q.shape} do not match caches {k.shape} / {v.shape}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"cached_attention: dtypes differ: queries {q.dtype}, keys {k.dtype}, values {v.dtype}")
    if not tq <= length <= k.shape[2]:
        raise ValueError(f"cached_attention: need Tq ({tq}) <= length ({length}) <= cache size "
                         f"({k.shape[2]})")
    if starts is None:
        return np.zeros(b, np.int64)
    starts = np.asarray(starts)
    if starts.shape != (b,) or starts.dtype.kind not in "iu":
        raise ValueError(f"cached_attention: starts must be {b} integers (one per row), got "
                         f"{starts.dtype} {starts.shape}")
    if b and not (starts.min() >= 0 and starts.max() <= length - tq):
        raise ValueError(f"cached_attention: starts must lie in 0..length - Tq ({length - tq}) so "
                         f"that every query sees a key, got {starts.min()}..{starts.max()}")
    return starts.astype(np.int64)


def cached_attention_ref(q, k, v, length, scale, starts=None):
    # q (b, H, Tq, hd); k, v (b, G, max_len, hd) with `length` valid positions -> context (b, Tq, H, hd)
    starts = _check(q, k, v, length, starts)
    if starts.any():  # row r alone, its cache cut to the valid keys starts[r] .. length - 1
        return np.concatenate([cached_attention_ref(q[r:r + 1], k[r:r + 1, :, s:], v[r:r + 1, :, s:],
                                                    length - s, scale)
                               for r, s in enumerate(starts)])      # (b, Tq, H, hd)
    b, h, tq, hd = q.shape
    g = k.shape[1]
    qg = q.reshape(b, g, h // g, tq, hd)                                    # (b, G, H/G, Tq, hd)
    keys, values = k[:, :, None, :length], v[:, :, None, :length]           # (b, G, 1, L, hd)
    weights = causal_softmax_forward_ref(np.matmul(qg, keys.swapaxes(-1, -2)), scale)  # (b, G, H/G, Tq, L)
    context = np.matmul(weights, values).reshape(b, h, tq, hd)              # (b, H, Tq, hd)
    return np.ascontiguousarray(context.transpose(0, 2, 1, 3))


@njit(fastmath={"contract"})
def _cached_attn(q, k, v, length, starts, scale, out, c, nchunks):
    # q (b, H, Tq, hd), k/v (b, G, max_len, hd), out (b, Tq, H, hd), all C-contiguous, starts (b,);
    # chunks of (b, H) pairs
    nb, nh, tq, hd = q.shape
    group = nh // k.shape[1]                             # query heads per key/value head
    zero = out.dtype.type(0.0)
    scores = np.empty(length, q.dtype)
    weights = np.empty(length, q.dtype)
    lo, hi = chunk_bounds(c, nchunks, nb * nh)
    for pair in range(lo, hi):
        bi, h = pair // nh, pair % nh
        s0 = starts[bi]                                  # the row's first valid key
        kh, vh = k[bi, h // group, s0:], v[bi, h // group, s0:]
        for i in range(tq):
            n = length - s0 - tq + i + 1                 # keys this query may see
            qi = q[bi, h, i]
            for j in range(n):
                scores[j] = row_dot(qi, kh[j], hd)
            _causal_row(scores, scale, weights, n)
            oi = out[bi, i, h]
            oi[:] = zero
            for j in range(n):
                wj, vj = weights[j], vh[j]
                for d in range(hd):
                    oi[d] += wj * vj[d]


def cached_attention_numba(q, k, v, length, scale, starts=None):
    starts = _check(q, k, v, length, starts)
    q = np.ascontiguousarray(q)
    k, v = np.ascontiguousarray(k), np.ascontiguousarray(v)  # the cache buffers already are
    b, h, tq, hd = q.shape
    out = np.empty((b, tq, h, hd), q.dtype)
    if out.size:
        nc = chunks(b * h, max(1, MIN_ELEMS // max(1, 2 * tq * length * hd)))
        run_chunks(_cached_attn, nc, q, k, v, length, starts, q.dtype.type(scale), out)
    return out
