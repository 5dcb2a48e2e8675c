"""Attention, book chapter 3, plus a KV cache for generation.

Section 3.3.2 `SelfAttention_v1` (raw weight matrices), 3.4.2 `SelfAttention_v2` (Linear layers),
3.5.3 `CausalAttention` (causal mask + dropout on the attention weights), 3.6.1
`MultiHeadAttentionWrapper` (stacked single heads) and 3.6.2 `MultiHeadAttention` (one projection
split into heads, then `out_proj`): the class that GPTModel uses.

`MultiHeadAttention` builds no mask at all: `F.scaled_causal_softmax` applies 1/sqrt(head_dim)
and the causal mask inside one kernel, with query i of Tq at absolute position Tk - Tq + i, which
is exactly what a KV cache needs (new queries see every cached key and each other causally).
In training mode the same kernel pass also applies the attention-weight dropout (`self.dropout.p`),
with the mask `F.dropout` would draw. With a KV cache and no dropout, `kernels.cached_attention`
does the scores, that softmax and the weighted values in one call on the cache buffers.

The book's PyTorch modules register the mask as a persistent buffer, so their state dicts carry
`<prefix>.mask` entries. `BookStateDict` reproduces that: `state_dict()` lists each mask (float,
1 above the diagonal, in the module's dtype) where PyTorch does, and `load_state_dict()` accepts
and checks such entries without requiring them. State dicts thus interchange in both directions.
"""
import functools
import math
from collections import OrderedDict

import numpy as np

from .. import kernels
from ..core.autograd import is_grad_enabled
from ..core.tensor import Tensor, rand
from ..nn import Dropout, Linear, Module, ModuleList, Parameter
from ..nn import functional as F
from ..ops import cat
from ..errors import InputError


@functools.lru_cache(maxsize=8)
def _book_mask(context_length: int, dtype: np.dtype) -> np.ndarray:
    mask = np.triu(np.ones((context_length, context_length), dtype), k=1)  # (ctx, ctx)
    mask.flags.writeable = False  # shared between layers and calls
    return mask


class BookStateDict:
    """Mixin for modules whose PyTorch twin (the book's code) has persistent `mask` buffers.
    A module exposes its mask through `book_mask() -> ndarray`."""

    def state_dict(self, masks: bool = True) -> "OrderedDict[str, np.ndarray]":
        """Names in PyTorch's order: per module its parameters, then its mask, then children.
        Tied parameters appear under each name. `masks=False` gives the parameters only."""
        out = OrderedDict()
        for mod_name, module in self.named_modules():
            prefix = f"{mod_name}." if mod_name else ""
            for name, param in module._parameters.items():
                out[prefix + name] = param.data
            if masks and hasattr(module, "book_mask"):
                out[prefix + "mask"] = module.book_mask()
        return out

    def load_state_dict(self, state_dict, strict: bool = True):
        """Module.load_state_dict, after checking and removing the optional `mask` entries."""
        owners = {(f"{n}.mask" if n else "mask"): m for n, m in self.named_modules()
                  if hasattr(m, "book_mask")}
        params = OrderedDict()
        for key, value in state_dict.items():
            if key not in owners:
                params[key] = value
                continue
            want = owners[key].book_mask()
            got = np.asarray(value.data if isinstance(value, Tensor) else value)
            if got.shape != want.shape or not np.array_equal(got != 0, want != 0):
                raise InputError(f"load_state_dict: {key!r} of shape {got.shape} is not the causal "
                                 f"mask of shape {want.shape} this model uses")
        return Module.load_state_dict(self, params, strict)


class SelfAttention_v1(Module):
    """Section 3.3.2: trainable weight matrices as raw Parameters, U(0, 1) as in `torch.rand`."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.W_query = Parameter(rand(d_in, d_out))  # (d_in, d_out)
        self.W_key = Parameter(rand(d_in, d_out))    # (d_in, d_out)
        self.W_value = Parameter(rand(d_in, d_out))  # (d_in, d_out)

    def forward(self, x):
        keys = x @ self.W_key                       # (T, d_out)
        queries = x @ self.W_query                  # (T, d_out)
        values = x @ self.W_value                   # (T, d_out)
        attn_scores = queries @ keys.transpose(-2, -1)  # (T, T)
        attn_weights = (attn_scores / keys.shape[-1] ** 0.5).softmax(dim=-1)  # (T, T)
        return attn_weights @ values                # (T, d_out)


class SelfAttention_v2(Module):
    """Section 3.4.2: the same with Linear layers (weights stored (d_out, d_in))."""

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False):
        super().__init__()
        self.W_query = Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x):
        keys = self.W_key(x)                        # (T, d_out)
        queries = self.W_query(x)                   # (T, d_out)
        values = self.W_value(x)                    # (T, d_out)
        attn_scores = queries @ keys.transpose(-2, -1)  # (T, T)
        attn_weights = (attn_scores / keys.shape[-1] ** 0.5).softmax(dim=-1)  # (T, T)
        return attn_weights @ values                # (T, d_out)


class CausalAttention(BookStateDict, Module):
    """Section 3.5.3: batched, causal (the book's mask buffer, built once with np.triu) and
    dropout on the attention weights."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float,
                 qkv_bias: bool = False):
        super().__init__()
        self.d_out, self.context_length = d_out, context_length
        self.W_query = Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = Dropout(dropout)
        self.register_buffer("mask", np.triu(np.ones((context_length, context_length), bool), k=1))

    def book_mask(self):
        return _book_mask(self.context_length, self.parameters()[0].dtype)

    def forward(self, x):
        b, num_tokens, d_in = x.shape
        _check_length(num_tokens, self.context_length)
        keys = self.W_key(x)                        # (b, T, d_out)
        queries = self.W_query(x)                   # (b, T, d_out)
        values = self.W_value(x)                    # (b, T, d_out)
        attn_scores = queries @ keys.transpose(1, 2)  # (b, T, T)
        attn_scores = attn_scores.masked_fill(self.mask[:num_tokens, :num_tokens], -np.inf)  # (b, T, T)
        attn_weights = (attn_scores / keys.shape[-1] ** 0.5).softmax(dim=-1)  # (b, T, T)
        attn_weights = self.dropout(attn_weights)   # (b, T, T)
        return attn_weights @ values                # (b, T, d_out)


class MultiHeadAttentionWrapper(BookStateDict, Module):
    """Section 3.6.1: `num_heads` CausalAttention heads run one after another, outputs concatenated."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float,
                 num_heads: int, qkv_bias: bool = False):
        super().__init__()
        self.heads = ModuleList([CausalAttention(d_in, d_out, context_length, dropout, qkv_bias)
                                 for _ in range(num_heads)])

    def forward(self, x):
        return cat([head(x) for head in self.heads], dim=-1)  # (b, T, num_heads * d_out)


class LayerKVCache:
    """Keys and values of one attention layer for the tokens seen so far (generation only).
    Buffers (b, num_heads, max_len, head_dim) are allocated on first use and filled in place,
    so a decode step copies one token's keys and values instead of re-concatenating."""

    def __init__(self, max_len: int):
        self.max_len, self.length = max_len, 0
        self.k = self.v = None

    def reset(self):
        self.length = 0

    def append(self, keys: Tensor, values: Tensor):
        """Store (b, H, T, hd) new keys/values; return all L = cached + T as (b, H, L, hd)."""
        if is_grad_enabled():
            raise RuntimeError("a KV cache holds constants: use it under tinygpt.no_grad()")
        b, h, t, hd = keys.shape
        end = self.length + t
        if end > self.max_len:
            raise InputError(f"KV cache overflow: {self.length} cached + {t} new tokens > "
                             f"max_len {self.max_len} (context_length)")
        if self.k is None or self.k.shape != (b, h, self.max_len, hd) or self.k.dtype != keys.dtype:
            if self.length:
                raise InputError(f"KV cache holds {self.length} tokens of shape {self.k.shape[:2]} "
                                 f"{self.k.dtype}, got keys {keys.shape} {keys.dtype}; reset() it")
            self.k = np.empty((b, h, self.max_len, hd), keys.dtype)  # (b, H, max_len, hd)
            self.v = np.empty((b, h, self.max_len, hd), keys.dtype)  # (b, H, max_len, hd)
        self.k[:, :, self.length:end] = keys.data    # (b, H, T, hd)
        self.v[:, :, self.length:end] = values.data  # (b, H, T, hd)
        self.length = end
        return Tensor(self.k[:, :, :end]), Tensor(self.v[:, :, :end])  # (b, H, L, hd) each


class MultiHeadAttention(BookStateDict, Module):
    """Section 3.6.2: one W_query/W_key/W_value projection each, split into `num_heads` heads of
    head_dim = d_out // num_heads, causal softmax (fused scale and mask, no mask array), dropout
    on the attention weights, heads merged and projected by `out_proj`.

    `forward(x, kv_cache=None)`: with a `LayerKVCache`, x holds only the new tokens; their keys
    and values are appended to the cache and the queries attend to everything cached, in one
    `kernels.cached_attention` call (the composed ops below when attention dropout is active).

    The three projection weights are row blocks of one (3 d_out, d_in) array (`qkv_packed`), so
    that where no gradient is needed (generation, evaluation, frozen layers) one product computes
    queries, keys and values: one pass over x and one BLAS call instead of three. Parameters,
    names and state dicts stay the book's. Whatever gives a weight a new array (Module.to, LoRA,
    assigning `.data`) ends the packing, and forward then uses the three layers one by one."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float,
                 num_heads: int, qkv_bias: bool = False):
        super().__init__()
        if d_out % num_heads:
            raise InputError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_out, self.num_heads = d_out, num_heads
        self.head_dim = d_out // num_heads
        self.context_length = context_length
        self.W_query = Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = Linear(d_out, d_out)  # combines the heads' outputs
        self.dropout = Dropout(dropout)
        self._qkv = self._pack_qkv()

    def book_mask(self):
        return _book_mask(self.context_length, self.parameters()[0].dtype)

    def _pack_qkv(self):
        """Copy the projections' weights (and biases) into one array and hand each Parameter its
        row block as a view. Returns (weight, bias or None, the views given out)."""
        layers = (self.W_query, self.W_key, self.W_value)
        weight = np.concatenate([layer.weight.data for layer in layers])  # (3 d_out, d_in)
        bias = None
        if layers[0].bias is not None:
            bias = np.concatenate([layer.bias.data for layer in layers])  # (3 d_out,)
        views = []
        for i, layer in enumerate(layers):
            rows = slice(i * self.d_out, (i + 1) * self.d_out)
            layer.weight.data = weight[rows]                # (d_out, d_in) view
            views.append(layer.weight.data)
            if bias is not None:
                layer.bias.data = bias[rows]                # (d_out,) view
                views.append(layer.bias.data)
        return weight, bias, tuple(views)

    @property
    def qkv_packed(self) -> bool:
        """True while W_query, W_key and W_value still hold the views `_pack_qkv` gave them (an
        identity test, so swapped or replaced weights can never be read from the packed array)."""
        views = self._qkv[2]
        params = []
        for layer in (self.W_query, self.W_key, self.W_value):
            if type(layer) is not Linear:  # e.g. LinearWithLoRA
                return False
            params += [layer.weight] if layer.bias is None else [layer.weight, layer.bias]
        return len(params) == len(views) and all(p.data is v for p, v in zip(params, views))

    def _split_heads(self, x):
        """Queries, keys and values (b, H, T, hd) each: one packed product when no graph is to be
        recorded, else the three Linear layers (each weight gets its own gradient)."""
        b, num_tokens, _ = x.shape
        h, hd = self.num_heads, self.head_dim
        layers = (self.W_query, self.W_key, self.W_value)
        graph = is_grad_enabled() and (x.requires_grad or any(
            p.requires_grad for layer in layers for p in layer.parameters()))
        if graph or not self.qkv_packed or x.dtype != self._qkv[0].dtype:
            return tuple(layer(x).reshape(b, num_tokens, h, hd).transpose(1, 2) for layer in layers)
        weight, bias, _ = self._qkv
        qkv = F.linear(x, Tensor(weight), None if bias is None else Tensor(bias)).data  # (b, T, 3 d_out)
        qkv = qkv.reshape(b, num_tokens, 3, h, hd).transpose(2, 0, 3, 1, 4)  # (3, b, H, T, hd)
        return Tensor(qkv[0]), Tensor(qkv[1]), Tensor(qkv[2])

    def forward(self, x, kv_cache: LayerKVCache | None = None):
        b, num_tokens, _ = x.shape
        if kv_cache is None:
            _check_length(num_tokens, self.context_length)
        queries, keys, values = self._split_heads(x)      # (b, H, T, hd) each
        dropout_p = self.dropout.p if self.training else 0.0
        if kv_cache is not None:
            keys, values = kv_cache.append(keys, values)  # (b, H, L, hd), L = cached + T
            if dropout_p == 0.0:  # the steps below in one kernel, on the cache buffers
                context_vec = kernels.cached_attention(queries.data, kv_cache.k, kv_cache.v, kv_cache.length,
                                                       1.0 / math.sqrt(self.head_dim))  # (b, T, H, hd)
                return self.out_proj(Tensor(context_vec.reshape(b, num_tokens, self.d_out)))
        attn_scores = queries @ keys.transpose(2, 3)       # (b, H, T, L)
        # the book's softmax(scores / sqrt(hd)) with the mask, then self.dropout: one fused op
        attn_weights = F.scaled_causal_softmax(attn_scores, 1.0 / math.sqrt(self.head_dim),
                                               dropout_p)  # (b, H, T, L)
        context_vec = (attn_weights @ values).transpose(1, 2)  # (b, T, H, hd)
        context_vec = context_vec.reshape(b, num_tokens, self.d_out)  # (b, T, d_out)
        return self.out_proj(context_vec)                  # (b, T, d_out)


def _check_length(num_tokens: int, context_length: int) -> None:
    if num_tokens > context_length:
        raise InputError(f"attention got {num_tokens} tokens but context_length is "
                         f"{context_length}")
