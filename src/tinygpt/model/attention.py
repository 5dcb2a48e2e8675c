"""Attention, book chapter 3, plus a KV cache for generation.

Section 3.3.2 `SelfAttention_v1` (raw weight matrices), 3.4.2 `SelfAttention_v2` (Linear layers),
3.5.3 `CausalAttention` (causal mask + dropout on the attention weights), 3.6.1
`MultiHeadAttentionWrapper` (stacked single heads) and 3.6.2 `MultiHeadAttention` (one projection
split into heads, then `out_proj`), which GPTModel's blocks build. `tinygpt.model.for_inference`
swaps it for `FastMultiHeadAttention` (fast_attention.py): this class with a faster route for
generation, the same parameters and outputs.

`MultiHeadAttention` builds no mask at all: `F.scaled_causal_softmax` applies 1/sqrt(head_dim)
and the causal mask inside one kernel, with query i of Tq at absolute position Tk - Tq + i, which
is exactly what a KV cache needs (new queries see every cached key and each other causally).
In training mode the same kernel pass also applies the attention-weight dropout (`self.dropout.p`),
with the mask `F.dropout` would draw.

The book's PyTorch modules register the mask as a persistent buffer, so their state dicts carry
`<prefix>.mask` entries. `BookStateDict` reproduces that: `state_dict()` lists each mask (float,
1 above the diagonal, in the module's dtype) where PyTorch does, and `load_state_dict()` accepts
and checks such entries without requiring them. State dicts thus interchange in both directions.
"""
import functools
from collections import OrderedDict

import numpy as np

from ..core.autograd import is_grad_enabled
from ..core.tensor import Tensor, rand
from ..nn import Dropout, Linear, Module, ModuleList, Parameter
from ..nn import functional as F
from ..ops import cat
from ..errors import InputError, TinyGPTError


class KVCacheError(TinyGPTError, RuntimeError):
    """A KV cache used where a gradient is being recorded (it holds constants)."""


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
            raise KVCacheError("a KV cache holds constants: use it under tinygpt.no_grad()")
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
    """Section 3.6.2: W_query, W_key and W_value project the input once each; the projections
    are split into `num_heads` heads of head_dim = d_out // num_heads, each head attends causally
    (scaled softmax, dropout on the attention weights), and `out_proj` combines the heads.

    `forward(x, kv_cache=None)`: with a `LayerKVCache` (generation, under no_grad) x holds only
    the new tokens; their keys and values are appended to the cache and the queries attend to
    every cached token. GPTModel builds this class; `for_inference` (inference.py) swaps in
    `FastMultiHeadAttention`, this class plus a faster route for generation."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float,
                 num_heads: int, qkv_bias: bool = False):
        super().__init__()
        if d_out % num_heads:
            raise InputError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads  # each head's share of the projection
        self.context_length = context_length
        self.W_query = Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = Linear(d_out, d_out)  # combines the heads' outputs
        self.dropout = Dropout(dropout)

    def book_mask(self):
        return _book_mask(self.context_length, self.parameters()[0].dtype)

    def forward(self, x, kv_cache: LayerKVCache | None = None):
        b, num_tokens, d_in = x.shape
        if kv_cache is None:
            _check_length(num_tokens, self.context_length)
        keys = self.W_key(x)                               # (b, T, d_out)
        queries = self.W_query(x)                          # (b, T, d_out)
        values = self.W_value(x)                           # (b, T, d_out)

        # split d_out into heads: (b, T, d_out) -> (b, T, H, hd)
        keys = keys.view(b, num_tokens, self.num_heads, self.head_dim)
        values = values.view(b, num_tokens, self.num_heads, self.head_dim)
        queries = queries.view(b, num_tokens, self.num_heads, self.head_dim)

        # heads first: (b, T, H, hd) -> (b, H, T, hd)
        keys = keys.transpose(1, 2)
        queries = queries.transpose(1, 2)
        values = values.transpose(1, 2)

        if kv_cache is not None:  # generation: the new keys/values join the cached ones
            keys, values = kv_cache.append(keys, values)   # (b, H, L, hd), L = cached + T

        attn_scores = queries @ keys.transpose(2, 3)       # (b, H, T, L): a dot product per head
        # the book's masked_fill(mask, -inf), softmax(scores / sqrt(hd)) and self.dropout in one
        # op, whose mask needs no array: query i sits at position L - T + i
        dropout_p = self.dropout.p if self.training else 0.0
        attn_weights = F.scaled_causal_softmax(attn_scores, 1.0 / keys.shape[-1] ** 0.5,
                                               dropout_p)  # (b, H, T, L)

        context_vec = (attn_weights @ values).transpose(1, 2)  # (b, T, H, hd)
        context_vec = context_vec.reshape(b, num_tokens, self.d_out)  # heads combined: (b, T, d_out)
        context_vec = self.out_proj(context_vec)           # (b, T, d_out)
        return context_vec


def _check_length(num_tokens: int, context_length: int) -> None:
    if num_tokens > context_length:
        raise InputError(f"attention got {num_tokens} tokens but context_length is "
                         f"{context_length}")
