"""`FastGroupedQueryAttention` and `FastFeedForward`: the attention and SwiGLU feed-forward of
Qwen3 and Llama 3 (modern.py, which stays the listing a reader follows) with a faster route where
no gradient is needed. No model builds them: `tinygpt.model.for_inference(model)` (inference.py)
puts them in place of each GroupedQueryAttention and FeedForward, holding those layers' very
Linears; the CLI's generate and chat do so. Same parameters, state-dict names and outputs as the
book-shaped classes.

Over a prompt (no cache, or more than DECODE_TOKENS new tokens after one) and in training,
attention runs `F.causal_attention` (ops/attention.py), the blocked causal kernel forward and
backward, on the same queries, keys and values as the book-shaped forward; the layers run
themselves, so training records the same graph around it. Elsewhere:

1. One product for the layers that read the same input: W_query/W_key/W_value, and fc1/fc2, are
   each a `PackedLinears` (packing.py), whose row blocks ARE the layers' weights. Decoding a
   token is a matrix-vector product per layer; packed, there are 4 of them per block, not 7.
   Both take it only when decoding: over a prompt the products are matrix-matrix and packing
   saves nothing.
2. Decoding (a KV cache and at most DECODE_TOKENS new tokens) runs the attention on arrays in
   (b, T, heads, hd) layout: QK-norm through the norm modules, RoPE by `ops.modern.rotate`, the
   cache append, then `kernels.cached_attention`, which computes the scores, the causal softmax
   and the weighted values of every query head in one call on the cache buffers, each key/value
   head read once for its group, straight into the layout `out_proj` reads. The book-shaped
   forward costs about 25 op dispatches per layer and token; this route about 8, so a decode
   step is almost all weight reads (bench/generate_modern.py's "x bound").
   A batched cache (model/batched.py: several sequences right-aligned in one cache) always takes
   this route, with each row's own RoPE positions and first valid key (`starts`); where the
   projections are not packed (LoRA) they run themselves here.

Why DECODE_TOKENS: the cached kernel loops over query rows; over a long prompt the batched
products win on one thread (bench/README.md, "cached attention gqa"), and the blocked kernel more
so, so a prompt takes the blocked kernel.

When a layer is replaced (LoRA) or given new arrays, the packed product stops (packing.py says
how that is checked) and the layers run themselves; `pack()` packs again. Checked by
tests/test_fast_modern.py.
"""
import numpy as np

from .. import kernels
from ..core.autograd import is_grad_enabled
from ..core.tensor import Tensor
from ..nn import functional as F
from ..ops.modern import rope, rotate
from .attention import LayerKVCache
from .modern import FeedForward, GroupedQueryAttention
from .packing import FastTwin, PackedLinears

DECODE_TOKENS = 16  # new tokens per call up to which attention runs the cached-attention kernel
QKV_NAMES, FC12_NAMES = ("W_query", "W_key", "W_value"), ("fc1", "fc2")


def _packed_applies(packed: PackedLinears, x) -> bool:
    """The packed product may answer: intact, x in its dtype, and no gradient to record."""
    if not packed.intact or x.dtype != packed.weight.dtype:
        return False
    return not (is_grad_enabled() and (x.requires_grad or packed.requires_grad))


class FastGroupedQueryAttention(FastTwin, GroupedQueryAttention):
    """GroupedQueryAttention plus the packed Q/K/V product and the decode route; see the module
    docstring."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._qkv = PackedLinears(self, QKV_NAMES)

    _group, _names = "_qkv", QKV_NAMES  # FastTwin's from_book, pack, packed (packing.py)

    def forward(self, x, cos, sin, kv_cache: LayerKVCache | None = None):
        batched = getattr(kv_cache, "starts", None) is not None     # model/batched.py's cache
        if not batched and (kv_cache is None or x.shape[1] > DECODE_TOKENS
                            or not _packed_applies(self._qkv, x)):
            return self._prompt(x, cos, sin, kv_cache)
        return self._decode(x, cos, sin, kv_cache)

    def _prompt(self, x, cos, sin, kv_cache):
        """GroupedQueryAttention.forward (modern.py) with `F.causal_attention`, the blocked kernel,
        in place of `grouped_query_attention`: prompts, prefill after a cache, and training."""
        b, num_tokens, _ = x.shape
        start = 0 if kv_cache is None else kv_cache.length  # position of the first new token
        heads, groups, hd = self.num_heads, self.num_kv_groups, self.head_dim
        queries = self.W_query(x).view(b, num_tokens, heads, hd).transpose(1, 2)   # (b, H, T, hd)
        keys = self.W_key(x).view(b, num_tokens, groups, hd).transpose(1, 2)       # (b, G, T, hd)
        values = self.W_value(x).view(b, num_tokens, groups, hd).transpose(1, 2)   # (b, G, T, hd)
        if self.q_norm is not None:
            queries, keys = self.q_norm(queries), self.k_norm(keys)  # (b, H, T, hd), (b, G, T, hd)
        queries = rope(queries, cos, sin, offset=start)      # (b, H, T, hd), rotated by position
        keys = rope(keys, cos, sin, offset=start)            # (b, G, T, hd)
        if kv_cache is not None:
            keys, values = kv_cache.append(keys, values)     # (b, G, L, hd), L = cached + T
        context = F.causal_attention(queries, keys, values)  # (b, H, T, hd)
        context = context.transpose(1, 2).reshape(b, num_tokens, self.d_out)  # (b, T, H*hd)
        return self.out_proj(context)                        # (b, T, emb)

    def _decode(self, x, cos, sin, kv_cache):
        b, num_tokens, _ = x.shape
        hd, start = self.head_dim, kv_cache.length
        parts = (self._qkv(x.data) if _packed_applies(self._qkv, x) else  # e.g. LoRA: the layers
                 [layer(x).data for layer in (self.W_query, self.W_key, self.W_value)])
        q, k, v = (part.reshape(b, num_tokens, -1, hd) for part in parts)  # (b, T, heads, hd)
        if self.q_norm is not None:                                  # QK-norm over head_dim
            q, k = self.q_norm(Tensor(q)).data, self.k_norm(Tensor(k)).data
        starts = getattr(kv_cache, "starts", None)                   # (b,) for a batched cache
        if starts is None:
            window = slice(start, start + num_tokens)
            cos_t, sin_t = cos[window, None, :], sin[window, None, :]    # (T, 1, hd): every head
        else:  # row r's tokens sit at positions start - starts[r] ..: its own RoPE positions
            pos = (start - starts)[:, None] + np.arange(num_tokens)      # (b, T)
            cos_t, sin_t = cos[pos][:, :, None, :], sin[pos][:, :, None, :]  # (b, T, 1, hd)
        q, k = rotate(q, cos_t, sin_t), rotate(k, cos_t, sin_t)      # rotated by position
        kv_cache.append(Tensor(k.transpose(0, 2, 1, 3)), Tensor(v.transpose(0, 2, 1, 3)))  # (b, G, T, hd)
        context = kernels.cached_attention(q.transpose(0, 2, 1, 3), kv_cache.k, kv_cache.v,
                                           kv_cache.length, 1.0 / hd ** 0.5, starts)  # (b, T, H, hd)
        return self.out_proj(Tensor(context.reshape(b, num_tokens, self.d_out)))  # (b, T, emb)


class FastFeedForward(FastTwin, FeedForward):
    """SwiGLU with fc1 and fc2 answered by one packed product when decoding (at most
    DECODE_TOKENS rows) and no gradient is needed, and silu(fc1) * fc2 computed on the arrays;
    fc3 is the layer itself. A prompt takes the book's route (see the module docstring)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._fc12 = PackedLinears(self, FC12_NAMES)

    _group, _names = "_fc12", FC12_NAMES  # FastTwin's from_book, pack, packed (packing.py)

    def forward(self, x):
        if x.size > DECODE_TOKENS * x.shape[-1] or not _packed_applies(self._fc12, x):
            return super().forward(x)                               # the book's route
        x_fc1, x_fc2 = self._fc12(x.data)                           # (b, T, hidden) each
        gated = kernels.silu_forward(x_fc1)                         # silu(fc1)
        gated *= x_fc2
        return self.fc3(Tensor(gated))                              # (b, T, emb)

