"""`FastGroupedQueryAttention`: the grouped-query attention of Qwen3 and Llama 3 with a fast route
for decoding. `GroupedQueryAttention` (modern.py) stays the listing a reader follows; Qwen3Model
and Llama3Model build this subclass, so `tinygpt.generate`, `generate_stream` and `tinygpt chat`
take the route without the caller doing anything. Same parameters, state-dict names and outputs.

The route: with a KV cache (generation, under no_grad) and at most DECODE_TOKENS new tokens, the
attention step itself (`attend`: scores, causal softmax, weighted values) is one call of
`kernels.cached_attention` on the cache buffers, for every query head at once, each key/value
head read once for its group, written straight into the (b, T, H, hd) layout `out_proj` reads.
The composed ops it replaces cost about ten dispatches per layer and token. Everything before it
(the projections, whatever layer holds them, QK-norm, RoPE, the cache append) is
GroupedQueryAttention.forward itself, and so is everything without a cache: training, evaluation.

Why DECODE_TOKENS: the kernel loops over query rows; over a long prompt the batched products of
`grouped_query_attention` win on one thread (bench/kernels.py "cached attention" rows).
Checked by tests/test_fast_gqa.py (the same outputs and tokens as the book-shaped class, and
that decoding takes the kernel).
"""
from .. import kernels
from ..core.tensor import Tensor
from .attention import LayerKVCache
from .modern import GroupedQueryAttention

DECODE_TOKENS = 16  # new tokens per call up to which `attend` runs the cached-attention kernel


class FastGroupedQueryAttention(GroupedQueryAttention):
    """GroupedQueryAttention plus the cached-attention kernel when decoding; see the module
    docstring."""

    def attend(self, queries, keys, values, kv_cache: LayerKVCache | None):
        num_tokens = queries.shape[2]
        if kv_cache is None or num_tokens > DECODE_TOKENS or kv_cache.k is None:
            return super().attend(queries, keys, values, kv_cache)
        context = kernels.cached_attention(queries.data, kv_cache.k, kv_cache.v, kv_cache.length,
                                           1.0 / self.head_dim ** 0.5)  # (b, T, H, hd)
        return Tensor(context.transpose(0, 2, 1, 3))                    # (b, H, T, hd), a view
