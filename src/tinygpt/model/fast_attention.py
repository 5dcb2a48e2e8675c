"""`FastMultiHeadAttention`: the book's `MultiHeadAttention` with fast routes for training, prompts
and generation. No model builds it: `tinygpt.model.for_inference(model)` (inference.py) puts one in
place of each MultiHeadAttention of a model, holding that layer's very Linear layers, so the
parameters, state-dict names and outputs stay those of `MultiHeadAttention` (attention.py), the
plain listing a reader follows. The twins train too (`for_training` is the same swap).

Three things make attention cheaper:

1. Over a prompt and in training (a graph recorded, attention dropout on):
   `F.causal_attention` (ops/attention.py, kernels/causal_attention.py) computes the book's
   scores, scaled causal softmax, dropout and weighted values in one blocked kernel, forward and
   backward, skipping the blocks above the diagonal and keeping no (T, T) weights for backward.
   With the same seed it drops the very weights the book's `scaled_causal_softmax` drops.
2. One product for queries, keys and values where no gradient is recorded: the three projections
   are a `PackedLinears` (packing.py), one (3 d_out, d_in) array whose row blocks ARE the layers'
   weights; x @ packed.T computes all three at once (when decoding, one matrix-vector product).
   In training each Linear runs itself, so its gradient reaches its own Parameter.
3. Decoding over a KV cache (at most DECODE_TOKENS new tokens, no attention dropout):
   `kernels.cached_attention` computes the scores, the causal softmax and the weighted values of
   every head in one call on the cache buffers, straight into the (b, T, H, hd) layout `out_proj`
   reads.

The packed product never reads stale weights: packing.py says why, and when the layers run
themselves instead (a cast, a replaced layer such as LoRA's). `pack()` packs again (for_inference
calls it on a layer that is fast already, e.g. after a cast).

Checked by tests/test_fast_attention.py and tests/test_causal_attention.py (equal outputs and
gradients, training steps equal to the book class's, KV cache, LoRA, replaced weights) and, for
speed, bench/generate.py (decode) and bench/train_step.py (training).
"""
from .. import kernels
from ..core.autograd import is_grad_enabled
from ..core.tensor import Tensor
from ..nn import functional as F
from .attention import LayerKVCache, MultiHeadAttention, _check_length
from .fast_modern import DECODE_TOKENS
from .packing import FastTwin, PackedLinears

QKV_NAMES = ("W_query", "W_key", "W_value")


class FastMultiHeadAttention(FastTwin, MultiHeadAttention):
    """MultiHeadAttention (section 3.6.2) plus the blocked causal-attention op, the packed Q/K/V
    product and the cached-attention kernel; see the module docstring."""

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
        b, num_tokens, _ = x.shape
        if kv_cache is None:
            _check_length(num_tokens, self.context_length)
        decode = kv_cache is not None and dropout_p == 0.0 and num_tokens <= DECODE_TOKENS
        packed = self._packed_product_applies(x)
        queries, keys, values = self._heads_packed(x) if packed else self._heads_by_layer(x)
        if kv_cache is not None:
            keys, values = kv_cache.append(keys, values)   # (b, H, L, hd), L = cached + T
        if decode:  # scores, causal softmax and weighted values in one kernel on the cache buffers
            context = kernels.cached_attention(queries.data, kv_cache.k, kv_cache.v,
                                               kv_cache.length, 1.0 / self.head_dim ** 0.5)  # (b, T, H, hd)
            context_vec = Tensor(context.reshape(b, num_tokens, self.d_out))  # (b, T, d_out)
        else:  # a prompt or training: the blocked causal-attention kernel, forward and backward
            context = F.causal_attention(queries, keys, values, dropout_p)   # (b, H, T, hd)
            context_vec = context.transpose(1, 2).reshape(b, num_tokens, self.d_out)  # (b, T, d_out)
        return self.out_proj(context_vec)                                    # (b, T, d_out)
