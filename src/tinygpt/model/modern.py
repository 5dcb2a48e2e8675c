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
holds the G rotated key/value heads, never H. The classes here are what a model is made of;
`tinygpt.model.for_inference` swaps in the faster twins of fast_modern.py for generation.
"""
import numpy as np

from ..core.dtypes import DEFAULT_FLOAT, check_index_array
from ..core.tensor import Tensor
from ..nn import Embedding, Linear, Module, Parameter, skip_init
from ..ops import grouped_query_attention, rms_norm, rope, rope_tables, silu
from .attention import LayerKVCache
from .gpt import KVCache
from ..errors import InputError, InputKeyError, InputTypeError


class RMSNorm(Module):
    """x / rms(x) * scale, no shift: the book's Qwen3 `RMSNorm`, its parameter named `scale`.
    The book's Llama 3 uses torch.nn.RMSNorm, the same op with its parameter named `weight`:
    `param_name="weight"` gives that name, so state dicts interchange with either."""

    def __init__(self, emb_dim: int, eps: float = 1e-6, param_name: str = "scale", dtype=None):
        super().__init__()
        if param_name not in ("scale", "weight"):
            raise InputError(f"RMSNorm param_name must be 'scale' (the book's Qwen3) or 'weight' "
                             f"(torch.nn.RMSNorm, the book's Llama 3), got {param_name!r}")
        self.eps, self.param_name = eps, param_name
        setattr(self, param_name, Parameter(np.ones(emb_dim, dtype or DEFAULT_FLOAT)))  # (emb,)

    def forward(self, x):
        return rms_norm(x, self._parameters[self.param_name], self.eps)


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
    """x + att(norm1(x)), then x + ff(norm2(x)). Qwen3Model and Llama3Model build the four modules
    (qwen3.py, llama3.py) and hand them in; the block only wires them."""

    def __init__(self, att: GroupedQueryAttention, ff: FeedForward, norm1: RMSNorm, norm2: RMSNorm):
        super().__init__()
        self.att, self.ff = att, ff
        self.norm1, self.norm2 = norm1, norm2

    def forward(self, x, cos, sin, kv_cache: LayerKVCache | None = None):
        shortcut = x                              # (b, T, emb)
        x = self.norm1(x)                         # (b, T, emb)
        x = self.att(x, cos, sin, kv_cache)       # (b, T, emb)
        x = x + shortcut                          # (b, T, emb)
        shortcut = x
        x = self.norm2(x)                         # (b, T, emb)
        x = self.ff(x)                            # (b, T, emb)
        return x + shortcut                       # (b, T, emb)


def output_head(cfg, tok_emb: Embedding) -> Linear:
    """out_head, Linear(emb, vocab) without bias. With cfg `tie_weights` (default False) its
    weight IS tok_emb.weight, as the smaller Hugging Face checkpoints store it (and no
    (vocab, emb) array is drawn only to be dropped)."""
    if not cfg.get("tie_weights", False):
        return Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
    with skip_init():
        head = Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
    head.weight = tok_emb.weight
    return head


REQUIRED_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "hidden_dim",
                 "n_kv_groups", "rope_base")


class RotaryModel(Module):
    """What Qwen3Model and Llama3Model share once their constructors have built tok_emb,
    trf_blocks, final_norm and out_head: the config check, the RoPE tables, the KV cache and the
    forward. An optional cfg key beyond the book's, `norm_eps`, overrides the RMSNorm eps (a
    Hugging Face config's `rms_norm_eps`); `tie_weights`: see `output_head`.

    RoPE tables. The book registers cos and sin for all context_length positions as buffers; a
    config may claim millions of positions, so here the tables cover the positions in use: built
    at the first forward for its length, and rebuilt longer (at least doubled, never past
    context_length) when a later input reaches past them. Row p is the same whatever the length."""

    def __init__(self, cfg):
        super().__init__()
        if type(self) is RotaryModel:
            raise InputTypeError("RotaryModel is what Qwen3Model and Llama3Model share; build one "
                                 "of those")
        missing = [k for k in REQUIRED_KEYS if k not in cfg]
        if missing:
            raise InputKeyError(f"{self.name} config lacks {', '.join(missing)}")
        self.cfg = dict(cfg)
        self._rope = {}  # dtype -> (cos, sin), (positions built, head_dim) each

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def weights_tied(self) -> bool:
        return self.out_head.weight is self.tok_emb.weight

    def rope_params(self, dtype, length: int | None = None):
        """(cos, sin), each (n, head_dim) in `dtype` with n >= `length` (default context_length)
        positions: the first rows of the book's buffers."""
        dtype, ctx = np.dtype(dtype), self.cfg["context_length"]
        length = ctx if length is None else length
        built = self._rope.get(dtype)
        have = 0 if built is None else built[0].shape[0]
        if have < length:
            n = min(ctx, max(length, 2 * have))
            head_dim = self.trf_blocks[0].att.head_dim
            self._rope[dtype] = rope_tables(head_dim, self.cfg["rope_base"], n,
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
        end = start + idx.shape[1]                # positions start .. end-1
        if end > self.cfg["context_length"]:
            raise InputError(f"{self.name} got {end} tokens but context_length "
                             f"is {self.cfg['context_length']}")
        x = self.tok_emb(idx)                     # (b, T, emb); positions enter through RoPE
        cos, sin = self.rope_params(x.dtype, end)  # (>= end, hd) each
        for i, block in enumerate(self.trf_blocks):
            x = block(x, cos, sin, None if kv_cache is None else kv_cache.layers[i])  # (b, T, emb)
        if last_only:
            x = x[:, -1:, :]                      # (b, 1, emb)
        x = self.final_norm(x)                    # (b, T or 1, emb)
        return self.out_head(x)                   # (b, T or 1, vocab)
