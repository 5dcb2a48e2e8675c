"""The pieces Qwen3 (qwen3.py) and Llama 3.2 (llama3.py) share, as the book repository writes them
(`ch05/11_qwen3`, `ch05/07_gpt_to_llama`). Against GPTModel (gpt.py):

* RMSNorm instead of LayerNorm (no mean, no shift), before attention, before the feed-forward,
  and at the end; in Qwen3 also on each query and key head (QK-norm, `att.q_norm`, `att.k_norm`).
* No position-embedding table: RoPE rotates queries and keys by their position inside attention.
* Grouped-query attention: `n_heads` query heads share `n_kv_groups` key/value heads (W_key and
  W_value are smaller, and so is the KV cache).
* SwiGLU feed-forward: fc3(silu(fc1(x)) * fc2(x)) instead of Linear-GELU-Linear.
* No biases, no dropout.

The ops are in tinygpt/ops/modern.py. The KV cache is GPTModel's `KVCache`: each layer's cache
holds the G rotated key/value heads, never H.
"""
import numpy as np

from ..core.dtypes import DEFAULT_FLOAT, check_index_array
from ..core.tensor import Tensor
from ..nn import Embedding, Linear, Module, ModuleList, Parameter, skip_init
from ..ops import grouped_query_attention, rms_norm, rope, rope_tables, silu
from .attention import LayerKVCache
from .gpt import KVCache
from .packing import repack
from ..errors import InputError, InputKeyError


class RMSNorm(Module):
    """The book's Qwen3 RMSNorm: x / rms(x) * scale, parameter `scale` (no `shift`)."""

    def __init__(self, emb_dim: int, eps: float = 1e-6, dtype=None):
        super().__init__()
        self.eps = eps
        self.scale = Parameter(np.ones(emb_dim, dtype or DEFAULT_FLOAT))

    def forward(self, x):
        return rms_norm(x, self.scale, self.eps)


class NNRMSNorm(Module):
    """torch.nn.RMSNorm, which the book's Llama 3 uses: the same op, its parameter named `weight`."""

    def __init__(self, emb_dim: int, eps: float = 1e-5, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(emb_dim, dtype or DEFAULT_FLOAT))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class FeedForward(Module):
    """SwiGLU: fc1 and fc2 (emb -> hidden) side by side, silu(fc1) gates fc2, fc3 back to emb."""

    def __init__(self, cfg):
        super().__init__()
        self.fc1 = Linear(cfg["emb_dim"], cfg["hidden_dim"], bias=False)
        self.fc2 = Linear(cfg["emb_dim"], cfg["hidden_dim"], bias=False)
        self.fc3 = Linear(cfg["hidden_dim"], cfg["emb_dim"], bias=False)

    def forward(self, x):
        x_fc1 = self.fc1(x)                       # (b, T, hidden)
        x_fc2 = self.fc2(x)                       # (b, T, hidden)
        return self.fc3(silu(x_fc1) * x_fc2)      # (b, T, emb)


class GroupedQueryAttention(Module):
    """H = num_heads query heads of head_dim, G = num_kv_groups key/value heads; query head h
    reads key/value head h // (H / G). With `qk_norm`, an RMSNorm over head_dim on every query
    and key head before RoPE (Qwen3)."""

    def __init__(self, d_in: int, num_heads: int, num_kv_groups: int, head_dim: int | None = None,
                 qk_norm: bool = False, norm_eps: float = 1e-6):
        super().__init__()
        if num_heads % num_kv_groups:
            raise InputError(f"num_heads ({num_heads}) must be divisible by num_kv_groups "
                             f"({num_kv_groups})")
        if head_dim is None:
            if d_in % num_heads:
                raise InputError(f"emb_dim ({d_in}) must be divisible by n_heads ({num_heads}) "
                                 "when head_dim is not set")
            head_dim = d_in // num_heads
        self.num_heads, self.num_kv_groups, self.head_dim = num_heads, num_kv_groups, head_dim
        self.group_size = num_heads // num_kv_groups
        self.d_out = num_heads * head_dim
        self.W_query = Linear(d_in, self.d_out, bias=False)
        self.W_key = Linear(d_in, num_kv_groups * head_dim, bias=False)
        self.W_value = Linear(d_in, num_kv_groups * head_dim, bias=False)
        self.out_proj = Linear(self.d_out, d_in, bias=False)
        if qk_norm:
            self.q_norm = RMSNorm(head_dim, eps=norm_eps)
            self.k_norm = RMSNorm(head_dim, eps=norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x, cos, sin, kv_cache: LayerKVCache | None = None):
        b, num_tokens, _ = x.shape
        start = 0 if kv_cache is None else kv_cache.length  # position of the first new token
        queries = self.W_query(x)                 # (b, T, H*hd)
        keys = self.W_key(x)                      # (b, T, G*hd)
        values = self.W_value(x)                  # (b, T, G*hd)

        queries = queries.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)    # (b, H, T, hd)
        keys = keys.view(b, num_tokens, self.num_kv_groups, self.head_dim).transpose(1, 2)      # (b, G, T, hd)
        values = values.view(b, num_tokens, self.num_kv_groups, self.head_dim).transpose(1, 2)  # (b, G, T, hd)

        if self.q_norm is not None:
            queries = self.q_norm(queries)        # (b, H, T, hd)
            keys = self.k_norm(keys)              # (b, G, T, hd)
        queries = rope(queries, cos, sin, offset=start)  # (b, H, T, hd), rotated by position
        keys = rope(keys, cos, sin, offset=start)        # (b, G, T, hd)

        if kv_cache is not None:  # generation: the new keys/values join the cached ones
            keys, values = kv_cache.append(keys, values)  # (b, G, L, hd), L = cached + T

        context = grouped_query_attention(queries, keys, values)  # (b, H, T, hd), causal
        context = context.transpose(1, 2).reshape(b, num_tokens, self.d_out)  # (b, T, H*hd)
        return self.out_proj(context)             # (b, T, emb)


class TransformerBlock(Module):
    """x + att(norm1(x)), then x + ff(norm2(x)); `norm` is RMSNorm (Qwen3) or NNRMSNorm (Llama)."""

    def __init__(self, cfg, norm, norm_eps: float, attention=GroupedQueryAttention,
                 feed_forward=FeedForward):
        super().__init__()
        self.att = attention(cfg["emb_dim"], cfg["n_heads"], cfg["n_kv_groups"], cfg.get("head_dim"),
                             cfg.get("qk_norm", False), norm_eps)
        self.ff = feed_forward(cfg)
        self.norm1 = norm(cfg["emb_dim"], eps=norm_eps)
        self.norm2 = norm(cfg["emb_dim"], eps=norm_eps)

    def forward(self, x, cos, sin, kv_cache: LayerKVCache | None = None):
        shortcut = x                              # (b, T, emb)
        x = self.norm1(x)                         # (b, T, emb)
        x = self.att(x, cos, sin, kv_cache)       # (b, T, emb)
        x = x + shortcut                          # (b, T, emb)
        shortcut = x
        x = self.norm2(x)                         # (b, T, emb)
        x = self.ff(x)                            # (b, T, emb)
        return x + shortcut                       # (b, T, emb)


REQUIRED_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "hidden_dim",
                 "n_kv_groups", "rope_base")


class RotaryModel(Module):
    """What Qwen3Model and Llama3Model share: tok_emb, trf_blocks, final_norm, out_head, the RoPE
    tables, the KV cache and the forward. A subclass gives the norm class, its eps, the attention
    and feed-forward classes (Qwen3Model and Llama3Model: the fast ones of fast_modern.py) and the
    RoPE frequency scaling. Two optional cfg keys beyond the book's: `tie_weights` (default False)
    makes out_head.weight BE tok_emb.weight, as the smaller Hugging Face checkpoints store it;
    `norm_eps` overrides the RMSNorm eps (a Hugging Face config's `rms_norm_eps`)."""

    norm, norm_eps, name = RMSNorm, 1e-6, "RotaryModel"
    attention, feed_forward = GroupedQueryAttention, FeedForward

    def __init__(self, cfg):
        super().__init__()
        missing = [k for k in REQUIRED_KEYS if k not in cfg]
        if missing:
            raise InputKeyError(f"{self.name} config lacks {', '.join(missing)}")
        self.cfg = dict(cfg)
        eps = cfg.get("norm_eps", self.norm_eps)
        self.tok_emb = Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.trf_blocks = ModuleList([TransformerBlock(cfg, self.norm, eps, self.attention,
                                                       self.feed_forward)
                                      for _ in range(cfg["n_layers"])])
        self.final_norm = self.norm(cfg["emb_dim"], eps=eps)
        if cfg.get("tie_weights", False):  # no (vocab, emb) array drawn only to be dropped
            with skip_init():
                self.out_head = Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
            self.out_head.weight = self.tok_emb.weight
        else:
            self.out_head = Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
        self._rope = {}  # dtype -> (cos, sin), built on first use in that dtype

    def to(self, dtype):
        """Module.to, then the fast layers pack their products again (the cast gave the weights
        new arrays; see packing.py)."""
        super().to(dtype)
        repack(self)
        return self

    @property
    def weights_tied(self) -> bool:
        return self.out_head.weight is self.tok_emb.weight

    def rope_params(self, dtype):
        """(cos, sin) of shape (context_length, head_dim) in `dtype` (the book's buffers)."""
        dtype = np.dtype(dtype)
        if dtype not in self._rope:
            head_dim = self.trf_blocks[0].att.head_dim
            self._rope[dtype] = rope_tables(head_dim, self.cfg["rope_base"], self.cfg["context_length"],
                                            self.cfg.get("rope_freq"), dtype)
        return self._rope[dtype]

    def new_kv_cache(self, max_len: int | None = None) -> KVCache:
        """An empty cache for up to `max_len` (default context_length) tokens."""
        return KVCache.for_model(self.cfg, max_len)

    def forward(self, in_idx, kv_cache: KVCache | None = None, last_only: bool = False):
        idx = np.asarray(in_idx.data if isinstance(in_idx, Tensor) else in_idx)
        idx = check_index_array(idx, f"{self.name} input token ids")  # (b, T) int64
        if idx.ndim != 2 or idx.shape[1] == 0:
            raise InputError(f"{self.name} input must have shape (batch, tokens) with tokens >= 1, "
                             f"got {idx.shape}")
        start = 0 if kv_cache is None else kv_cache.length
        if start + idx.shape[1] > self.cfg["context_length"]:
            raise InputError(f"{self.name} got {start + idx.shape[1]} tokens but context_length "
                             f"is {self.cfg['context_length']}")
        x = self.tok_emb(idx)                     # (b, T, emb); positions enter through RoPE
        cos, sin = self.rope_params(x.dtype)      # (ctx, hd) each
        for i, block in enumerate(self.trf_blocks):
            x = block(x, cos, sin, None if kv_cache is None else kv_cache.layers[i])  # (b, T, emb)
        if last_only:
            x = x[:, -1:, :]                      # (b, 1, emb)
        x = self.final_norm(x)                    # (b, T or 1, emb)
        return self.out_head(x)                   # (b, T or 1, vocab)
