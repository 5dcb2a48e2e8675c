"""`FastMultiHeadAttention`: the book's `MultiHeadAttention` with a fast route for generation and
evaluation. No model builds it: `tinygpt.model.for_inference(model)` (inference.py) puts one in
place of each MultiHeadAttention of a model, holding that layer's very Linear layers, so the
parameters, state-dict names and outputs stay those of `MultiHeadAttention` (attention.py), the
plain listing a reader follows.

Where a graph is recorded (training), `forward` IS `MultiHeadAttention.forward`. Elsewhere two
things make attention cheaper:

1. One product for queries, keys and values: the three projections are a `PackedLinears`
   (packing.py), one (3 d_out, d_in) array whose row blocks ARE the layers' weights. Where the
   projections need no gradient, x @ packed.T computes all three at once: one pass over x and
   one BLAS call instead of three (when decoding, one matrix-vector product of 3 d_out rows).
2. Decoding over a KV cache without attention dropout: `kernels.cached_attention` computes the
   scores, the causal softmax and the weighted values of every head in one call on the cache
   buffers, straight into the (b, T, H, hd) layout `out_proj` reads.

The packed product never reads stale weights: packing.py says why, and when the layers run
themselves instead (a cast, a replaced layer such as LoRA's). `pack()` packs again (for_inference
calls it on a layer that is fast already, e.g. after a cast).

Checked by tests/test_fast_attention.py (equal outputs and gradients, KV cache, LoRA, replaced
weights) and, for speed, bench/generate.py (KV-cache decode ms/token against PyTorch).
"""
from .. import kernels
from ..core.autograd import is_grad_enabled
from ..core.tensor import Tensor
from ..nn import functional as F
from .attention import LayerKVCache, MultiHeadAttention, _check_length
from .packing import FastTwin, PackedLinears

QKV_NAMES = ("W_query", "W_key", "W_value")


class FastMultiHeadAttention(FastTwin, MultiHeadAttention):
    """MultiHeadAttention (section 3.6.2) plus the packed Q/K/V product and the cached-attention
    kernel where no gradient is needed; see the module docstring."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float,
                 num_heads: int, qkv_bias: bool = False):
        super().__init__(d_in, d_out, context_length, dropout, num_heads, qkv_bias)
        self._qkv = PackedLinears(self, QKV_NAMES)  # the Linears made above

    _group, _names = "_qkv", QKV_NAMES  # FastTwin's from_book, pack, packed (packing.py)

    def _packed_product_applies(self, x) -> bool:
        if not self.packed or x.dtype != self._qkv.weight.dtype:
            return False
        return not (is_grad_enabled() and (x.requires_grad or self._qkv.requires_grad))

    def _heads_packed(self, x):
        """Queries, keys and values (b, H, T, hd) each from one product with the packed array."""
        b, num_tokens, _ = x.shape
        return tuple(Tensor(part.reshape(b, num_tokens, self.num_heads, self.head_dim).transpose(0, 2, 1, 3))
                     for part in self._qkv(x.data))                          # (b, T, d_out) each

    def _heads_by_layer(self, x):
        """Queries, keys and values (b, H, T, hd) each through the three layers (e.g. LoRA)."""
        b, num_tokens, _ = x.shape
        return tuple(layer(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
                     for layer in (self.W_query, self.W_key, self.W_value))

    def forward(self, x, kv_cache: LayerKVCache | None = None):
        dropout_p = self.dropout.p if self.training else 0.0
        packed = self._packed_product_applies(x)
        fused = kv_cache is not None and dropout_p == 0.0
        if not (packed or fused):
            return super().forward(x, kv_cache)  # the book's route; training records its graph
        b, num_tokens, _ = x.shape
        if kv_cache is None:
            _check_length(num_tokens, self.context_length)
        queries, keys, values = self._heads_packed(x) if packed else self._heads_by_layer(x)
        scale = 1.0 / self.head_dim ** 0.5  # the book's 1 / sqrt(keys.shape[-1])
        if kv_cache is not None:
            keys, values = kv_cache.append(keys, values)   # (b, H, L, hd), L = cached + T
        if fused:  # scores, causal softmax and weighted values in one kernel on the cache buffers
            context = kernels.cached_attention(queries.data, kv_cache.k, kv_cache.v,
                                               kv_cache.length, scale)      # (b, T, H, hd)
            context_vec = Tensor(context.reshape(b, num_tokens, self.d_out))  # (b, T, d_out)
        else:  # as MultiHeadAttention.forward
            attn_scores = queries @ keys.transpose(2, 3)                     # (b, H, T, L)
            attn_weights = F.scaled_causal_softmax(attn_scores, scale, dropout_p)  # (b, H, T, L)
            context_vec = (attn_weights @ values).transpose(1, 2)            # (b, T, H, hd)
            context_vec = context_vec.reshape(b, num_tokens, self.d_out)     # (b, T, d_out)
        return self.out_proj(context_vec)                                    # (b, T, d_out)
