"""`FastMultiHeadAttention`: the book's `MultiHeadAttention` with a fast route for generation and
evaluation. GPTModel's TransformerBlock builds this class, so `generate` (with its KV cache), the
CLI's generate, the training loop's samples and evaluation under no_grad all take the fast route
without the caller doing anything. It has the same parameters, state-dict names and outputs as
`MultiHeadAttention` (attention.py), which stays the plain listing a reader follows.

Where a graph is recorded (training), `forward` IS `MultiHeadAttention.forward`. Elsewhere two
things make attention cheaper:

1. One product for queries, keys and values. The constructor copies the three projection weights
   (and biases) into one (3 d_out, d_in) array and hands each Parameter its row block as a view.
   Where the projections need no gradient, x @ packed.T computes all three at once: one pass over
   x and one BLAS call instead of three (when decoding, one matrix-vector product of 3 d_out rows).
2. Decoding over a KV cache without attention dropout: `kernels.cached_attention` computes the
   scores, the causal softmax and the weighted values of every head in one call on the cache
   buffers, straight into the (b, T, H, hd) layout `out_proj` reads.

Why the packed product cannot read stale weights: the packed array IS the weights' storage, so
every in-place change (optimizer steps, load_state_dict, merge_lora) lands in it. Whatever breaks
that link ends the packed product, and `qkv_packed` checks the link on every call: each of
W_query/W_key/W_value must still be the Linear module that was packed, holding the very view it
was given. A new weight array (Module.to, assigning `.data`) or a replaced layer (LoRA's
LinearWithLoRA, or any module) fails the check, and the projections then run through the layers
themselves, whatever they compute. `pack_qkv()` packs again (GPTModel.to calls it after a cast).

Checked by tests/test_fast_attention.py (equal outputs and gradients, KV cache, LoRA, replaced
weights) and, for speed, bench/generate.py (KV-cache decode ms/token against PyTorch).
"""
import numpy as np

from .. import kernels
from ..core.autograd import is_grad_enabled
from ..core.tensor import Tensor
from ..nn import functional as F
from .attention import LayerKVCache, MultiHeadAttention, _check_length

QKV_NAMES = ("W_query", "W_key", "W_value")


class FastMultiHeadAttention(MultiHeadAttention):
    """MultiHeadAttention (section 3.6.2) plus the packed Q/K/V product and the cached-attention
    kernel where no gradient is needed; see the module docstring."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float,
                 num_heads: int, qkv_bias: bool = False):
        super().__init__(d_in, d_out, context_length, dropout, num_heads, qkv_bias)
        self._built = tuple(getattr(self, name) for name in QKV_NAMES)  # the Linears made above
        self._packed = None  # (weight (3 d_out, d_in), bias (3 d_out,) or None, per-layer views)
        self.pack_qkv()

    def pack_qkv(self) -> bool:
        """Copy the projections' current weights (and biases) into one array and give each
        Parameter its row block as a view. Only the Linear layers this module built are packed,
        never a layer put in their place; already packed weights are left as they are. Returns
        `qkv_packed`."""
        if self.qkv_packed:
            return True
        layers = tuple(getattr(self, name) for name in QKV_NAMES)
        params = [(layer.weight, layer.bias) for layer in layers]
        dtypes = {p.dtype for pair in params for p in pair if p is not None}
        if any(a is not b for a, b in zip(layers, self._built)) or len(dtypes) != 1 or len({b is None for _, b in params}) != 1:
            return self.qkv_packed
        weight = np.concatenate([w.data for w, _ in params])              # (3 d_out, d_in)
        bias = None if params[0][1] is None else np.concatenate([b.data for _, b in params])
        views = []
        for i, (w, b) in enumerate(params):
            rows = slice(i * self.d_out, (i + 1) * self.d_out)
            w.data = weight[rows]                                          # (d_out, d_in) view
            if b is not None:
                b.data = bias[rows]                                        # (d_out,) view
            views.append((w.data, None if b is None else b.data))
        self._packed = (weight, bias, tuple(views))
        return True

    @property
    def qkv_packed(self) -> bool:
        """True while each projection is the Linear that was packed and still holds its views
        (identity tests: a weight with a new array or a replaced layer is never read packed)."""
        if self._packed is None:
            return False
        for name, layer, (w, b) in zip(QKV_NAMES, self._built, self._packed[2]):
            if getattr(self, name) is not layer or layer.weight.data is not w:
                return False
            if (layer.bias is None) != (b is None) or (b is not None and layer.bias.data is not b):
                return False
        return True

    def _packed_product_applies(self, x) -> bool:
        if not self.qkv_packed or x.dtype != self._packed[0].dtype:
            return False
        if not is_grad_enabled():
            return True
        return not (x.requires_grad or any(p.requires_grad for layer in self._built
                                           for p in (layer.weight, layer.bias) if p is not None))

    def _heads_packed(self, x):
        """Queries, keys and values (b, H, T, hd) each from one product with the packed array."""
        b, num_tokens, _ = x.shape
        weight, bias, _ = self._packed
        qkv = F.linear(x, Tensor(weight), None if bias is None else Tensor(bias)).data  # (b, T, 3 d_out)
        qkv = qkv.reshape(b, num_tokens, 3, self.num_heads, self.head_dim)  # (b, T, 3, H, hd)
        qkv = qkv.transpose(2, 0, 3, 1, 4)                                   # (3, b, H, T, hd)
        return Tensor(qkv[0]), Tensor(qkv[1]), Tensor(qkv[2])

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
