"""Gemma 3 (text), as the book repository's `ch05/12_gemma3` writes it: `Gemma3Model` and the
config dicts of the 270M, 1B and 4B models, with the book's keys and module names (`blocks`, the
four norms named as Hugging Face names them), so state dicts interchange with the book's code.

What changed from Qwen3 (qwen3.py; modern.py has the shared pieces):

* Sliding-window attention: on "sliding_attention" layers a query at position p sees only the
  keys at p - sliding_window + 1 .. p (512 tokens in the 270M and 1B models); every sixth layer
  is a "full_attention" layer that sees the whole causal past. cfg["layer_types"] lists them.
* Two RoPE bases: 10,000 on the local layers (rope_local_base), 1,000,000 on the global ones
  (rope_base; the 4B model also stretches it linearly by rope_linear_factor 8).
* Four RMSNorms per block, before and after attention and before and after the feed-forward:
  x + post_attention_layernorm(att(input_layernorm(x))), then the same around ff.
* RMSNorm scales by (1 + scale), the scale stored zero-centred (`GemmaRMSNorm`); QK-norm too.
* The feed-forward gates with GELU (tanh form) instead of SiLU: fc3(gelu(fc1(x)) * fc2(x)).
* The token embeddings are multiplied by sqrt(emb_dim); the released output head is tied to them.
* Attention scores are scaled by query_pre_attn_scalar ** -0.5 (256 ** -0.5 = 1 / sqrt(head_dim)).

Generation keeps bounded memory on the local layers: their KV cache (`SlidingLayerKVCache`)
holds only the last sliding_window - 1 tokens, all a new query can see besides itself.
"""
import numpy as np

from ..core.autograd import is_grad_enabled
from ..core.dtypes import DEFAULT_FLOAT
from ..core.tensor import Tensor, as_tensor
from ..errors import InputError, InputKeyError
from ..nn import Embedding, Module, ModuleList, Parameter
from ..ops import causal_attention, gelu, masked_fill, rms_norm, rope, scaled_causal_softmax
from .attention import KVCacheError, LayerKVCache
from .gpt import KVCache
from .modern import FeedForward, GroupedQueryAttention, RotaryModel, output_head

LOCAL, GLOBAL = "sliding_attention", "full_attention"


def gemma3_layer_types(n_layers: int, pattern: int = 6) -> list:
    """Five local layers, then one global, repeated: layer i is global when (i + 1) % 6 == 0."""
    return [GLOBAL if (i + 1) % pattern == 0 else LOCAL for i in range(n_layers)]


def windowed_config(cfg: dict, keys, name: str, default_types) -> dict:
    """A copy of a sliding-window model's `cfg` with its layer kinds filled in (`default_types(
    n_layers, pattern)` when None); refuses missing `keys` and a kinds list that is not one LOCAL
    or GLOBAL per layer. Gemma3Model and Olmo3Model (olmo3.py) start here."""
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise InputKeyError(f"{name} config lacks {', '.join(missing)}")
    cfg = dict(cfg)
    if cfg["layer_types"] is None:
        cfg["layer_types"] = default_types(cfg["n_layers"], cfg.get("sliding_window_pattern"))
    kinds = cfg["layer_types"]
    if not isinstance(cfg["n_layers"], int) or not isinstance(kinds, (list, tuple)) \
            or len(kinds) != cfg["n_layers"] or any(kind not in (LOCAL, GLOBAL) for kind in kinds):
        raise InputError(f"{name} layer_types must list {cfg['n_layers']} (n_layers) of "
                         f"{LOCAL!r} and {GLOBAL!r}, got {kinds!r}"[:300])
    return cfg


GEMMA3_CONFIG_270M = {
    "vocab_size": 262_144,           # vocabulary size
    "context_length": 32_768,        # context length the model was trained with
    "emb_dim": 640,                  # embedding dimension
    "n_heads": 4,                    # query heads
    "n_layers": 18,                  # transformer blocks
    "hidden_dim": 2048,              # size of the feed-forward's intermediate layer
    "head_dim": 256,                 # size of each head (4 * 256 = 1024 != emb_dim)
    "qk_norm": True,                 # RMSNorm on queries and keys
    "n_kv_groups": 1,                # key/value heads of grouped-query attention
    "rope_local_base": 10_000.0,     # RoPE base "theta" of the sliding-window layers
    "rope_base": 1_000_000.0,        # RoPE base "theta" of the full-attention layers
    "sliding_window": 512,           # tokens a local layer's query sees (itself included)
    "layer_types": gemma3_layer_types(18),
    "query_pre_attn_scalar": 256,    # attention scores are scaled by its -1/2 power
}

GEMMA3_CONFIG_1B = {**GEMMA3_CONFIG_270M, "emb_dim": 1152, "n_layers": 26, "hidden_dim": 6912,
                    "layer_types": gemma3_layer_types(26)}
GEMMA3_CONFIG_4B = {**GEMMA3_CONFIG_270M, "vocab_size": 262_208, "context_length": 131_072,
                    "emb_dim": 2560, "n_heads": 8, "n_layers": 34, "hidden_dim": 10240,
                    "n_kv_groups": 4, "sliding_window": 1024, "layer_types": gemma3_layer_types(34),
                    "rope_linear_factor": 8.0}  # global RoPE positions divided by 8

GEMMA3_CONFIGS = {"270M": GEMMA3_CONFIG_270M, "1B": GEMMA3_CONFIG_1B, "4B": GEMMA3_CONFIG_4B}


class GemmaRMSNorm(Module):
    """x / rms(x) * (1 + scale): Gemma stores the scale zero-centred (initialised to 0, so a fresh
    norm is the identity scale), the book's `RMSNorm` of ch05/12_gemma3, parameter `scale`."""

    def __init__(self, emb_dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = Parameter(np.zeros(emb_dim, DEFAULT_FLOAT))  # (emb,)

    def forward(self, x):
        return rms_norm(x, self.scale + 1.0, self.eps)


class GemmaFeedForward(FeedForward):
    """GeGLU: the SwiGLU layout (fc1, fc2, fc3) with GELU's tanh form as the gate."""

    def forward(self, x):
        x_fc1 = self.fc1(x)                       # (b, T, hidden)
        x_fc2 = self.fc2(x)                       # (b, T, hidden)
        return self.fc3(gelu(x_fc1) * x_fc2)      # (b, T, emb)


def far_past_mask(num_queries: int, num_keys: int, window: int) -> np.ndarray:
    """(T, L) bool, True where key j lies `window` or more positions before query i (query i at
    position L - T + i, as with a KV cache): the keys a sliding-window layer must not see."""
    query_pos = np.arange(num_keys - num_queries, num_keys)[:, None]   # (T, 1)
    key_pos = np.arange(num_keys)[None, :]                             # (1, L)
    return query_pos - key_pos >= window                               # (T, L)


def sliding_window_attention(queries, keys, values, scale: float, window: int | None = None):
    """Causal grouped-query attention of queries (b, H, T, hd) over keys/values (b, G, L, hd),
    query i at position L - T + i, scores scaled by `scale`; with `window`, each query sees only
    its last `window` keys (itself included). Returns (b, H, T, hd)."""
    queries, keys, values = as_tensor(queries), as_tensor(keys), as_tensor(values)
    if queries.ndim != 4 or keys.ndim != 4 or keys.shape != values.shape or keys.shape[1] == 0 \
            or queries.shape[1] % keys.shape[1] or keys.shape[::3] != queries.shape[::3] \
            or keys.shape[2] < queries.shape[2]:
        raise InputError(f"sliding_window_attention needs queries (b, H, T, hd) and keys/values "
                         f"(b, G, L, hd) with G dividing H and L >= T, got {queries.shape}, "
                         f"{keys.shape} and {values.shape}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise InputError(f"sliding_window_attention: window must be an int >= 1 or None, got {window!r}")
    b, n_heads, t, hd = queries.shape
    n_kv, length = keys.shape[1], keys.shape[2]
    q = queries.reshape(b, n_kv, n_heads // n_kv, t, hd)  # (b, G, gs, T, hd)
    k = keys.reshape(b, n_kv, 1, length, hd)              # (b, G, 1, L, hd): shared by the group
    v = values.reshape(b, n_kv, 1, length, hd)            # (b, G, 1, L, hd)
    scores = q @ k.transpose(-2, -1)                      # (b, G, gs, T, L)
    if window is not None and length > window:  # else no key is that far back
        scores = masked_fill(scores, far_past_mask(t, length, window), -1e10)  # far past out
    weights = scaled_causal_softmax(scores, scale)        # (b, G, gs, T, L)
    context = weights @ v                                 # (b, G, gs, T, hd)
    return context.reshape(b, n_heads, t, hd)             # (b, H, T, hd)


class Gemma3Attention(GroupedQueryAttention):
    """The book's GroupedQueryAttention of ch05/12_gemma3: Qwen3's (model/modern.py: H query heads,
    G key/value heads, the same four projections) with QK-norm by GemmaRMSNorm, scores scaled by
    query_pre_attn_scalar ** -0.5, and on a local layer (`sliding_window` set) the
    sliding-window mask."""

    def __init__(self, d_in: int, num_heads: int, num_kv_groups: int, head_dim: int,
                 query_pre_attn_scalar: float, sliding_window: int | None = None,
                 norm_eps: float = 1e-6):
        super().__init__(d_in, num_heads, num_kv_groups, head_dim)  # W_query .. out_proj
        self.scaling = float(query_pre_attn_scalar) ** -0.5
        self.sliding_window = sliding_window
        self.q_norm = GemmaRMSNorm(head_dim, eps=norm_eps)
        self.k_norm = GemmaRMSNorm(head_dim, eps=norm_eps)

    def forward(self, x, cos, sin, kv_cache=None):
        b, num_tokens, _ = x.shape
        start = 0 if kv_cache is None else kv_cache.length  # position of the first new token
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim)    # (b, T, H, hd)
        keys = self.W_key(x).view(b, num_tokens, self.num_kv_groups, self.head_dim)     # (b, T, G, hd)
        values = self.W_value(x).view(b, num_tokens, self.num_kv_groups, self.head_dim)  # (b, T, G, hd)
        queries = self.q_norm(queries.transpose(1, 2))    # (b, H, T, hd)
        keys = self.k_norm(keys.transpose(1, 2))          # (b, G, T, hd)
        values = values.transpose(1, 2)                   # (b, G, T, hd)
        queries = rope(queries, cos, sin, offset=start)   # (b, H, T, hd), rotated by position
        keys = rope(keys, cos, sin, offset=start)         # (b, G, T, hd)
        if kv_cache is not None:  # generation: the new keys/values join the cached ones
            keys, values = kv_cache.append(keys, values)  # (b, G, L, hd)
        # sliding_window_attention (above) in one blocked kernel: keys outside the window skipped
        context = causal_attention(queries, keys, values, window=self.sliding_window,
                                   scale=self.scaling)    # (b, H, T, hd)
        context = context.transpose(1, 2).reshape(b, num_tokens, self.d_out)  # (b, T, H*hd)
        return self.out_proj(context)                     # (b, T, emb)


class TransformerBlock(Module):
    """Norms before and after each sub-layer: x + post_attention_layernorm(att(input_layernorm(x))),
    then x + post_feedforward_layernorm(ff(pre_feedforward_layernorm(x))). `attn_type` picks the
    RoPE tables (and the attention was built with or without its window)."""

    def __init__(self, cfg, attn_type: str):
        super().__init__()
        emb, eps = cfg["emb_dim"], cfg.get("norm_eps", 1e-6)
        self.attn_type = attn_type
        self.att = Gemma3Attention(emb, cfg["n_heads"], cfg["n_kv_groups"], cfg["head_dim"],
                                   cfg["query_pre_attn_scalar"],
                                   cfg["sliding_window"] if attn_type == LOCAL else None, eps)
        self.ff = GemmaFeedForward(cfg)           # GeGLU: fc1, fc2, fc3
        self.input_layernorm = GemmaRMSNorm(emb, eps)
        self.post_attention_layernorm = GemmaRMSNorm(emb, eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(emb, eps)
        self.post_feedforward_layernorm = GemmaRMSNorm(emb, eps)

    def forward(self, x, rope_global, rope_local, kv_cache=None):
        cos, sin = rope_local if self.attn_type == LOCAL else rope_global  # (n, hd) each
        shortcut = x                              # (b, T, emb)
        x = self.input_layernorm(x)               # (b, T, emb)
        x = self.att(x, cos, sin, kv_cache)       # (b, T, emb)
        x = self.post_attention_layernorm(x)      # (b, T, emb)
        x = x + shortcut                          # (b, T, emb)
        shortcut = x
        x = self.pre_feedforward_layernorm(x)     # (b, T, emb)
        x = self.ff(x)                            # (b, T, emb)
        x = self.post_feedforward_layernorm(x)    # (b, T, emb)
        return x + shortcut                       # (b, T, emb)


class SlidingLayerKVCache:
    """A local layer's KV cache that keeps only the last `window` - 1 tokens' keys and values:
    with the new tokens they are all a query can see, so memory stays bounded by the window
    however long the generation (a full layer's `LayerKVCache` grows to max_len). `length` counts
    every token seen, as LayerKVCache's does (the positions of RoPE)."""

    def __init__(self, window: int, max_len: int):
        self.window, self.max_len, self.length = window, max_len, 0
        self.k = self.v = None                    # (b, G, <= window - 1, hd) each

    def reset(self):
        self.length = 0
        self.k = self.v = None

    def append(self, keys: Tensor, values: Tensor):
        """Store (b, G, T, hd) new keys/values; return the kept ones and the new ones, (b, G, L,
        hd), L = kept + T, the last at position length - 1."""
        if is_grad_enabled():
            raise KVCacheError("a KV cache holds constants: use it under tinygpt.no_grad()")
        if self.length + keys.shape[2] > self.max_len:
            raise InputError(f"KV cache overflow: {self.length} cached + {keys.shape[2]} new "
                             f"tokens > max_len {self.max_len} (context_length)")
        k, v = keys.data, values.data
        if self.k is not None:
            if self.k.shape[::3] != k.shape[::3] or self.k.shape[1] != k.shape[1] \
                    or self.k.dtype != k.dtype:
                raise InputError(f"KV cache holds keys of shape {self.k.shape} {self.k.dtype}, got "
                                 f"{k.shape} {k.dtype}; reset() it")
            k = np.concatenate([self.k, k], axis=2)  # (b, G, L, hd)
            v = np.concatenate([self.v, v], axis=2)  # (b, G, L, hd)
        first_kept = max(0, k.shape[2] - (self.window - 1))
        self.k = k[:, :, first_kept:].copy()      # (b, G, <= window - 1, hd)
        self.v = v[:, :, first_kept:].copy()
        self.length += keys.shape[2]
        return Tensor(k), Tensor(v)


class SlidingWindowKVCache(KVCache):
    """One cache per block: a `LayerKVCache` of max_len tokens on full-attention layers, a
    `SlidingLayerKVCache` of the last sliding_window - 1 tokens on local ones."""

    def __init__(self, layer_types, window: int, max_len: int):
        self.layers = [SlidingLayerKVCache(window, max_len) if kind == LOCAL
                       else LayerKVCache(max_len) for kind in layer_types]
        self.max_len = max_len


def rope_tables_linear(head_dim: int, base: float, n: int, factor: float, dtype):
    """(cos, sin), each (n, head_dim): RoPE tables with every frequency divided by `factor`
    (Hugging Face's "linear" rope type; factor 1 is plain RoPE), computed in float64."""
    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim) / factor
    angles = np.arange(n, dtype=np.float64)[:, None] * inv_freq[None, :]  # (n, hd/2)
    angles = np.concatenate([angles, angles], axis=1)                     # (n, hd)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


GEMMA3_KEYS = ("head_dim", "rope_local_base", "sliding_window", "layer_types",
               "query_pre_attn_scalar")


class SlidingWindowModel(RotaryModel):
    """What Gemma3Model and Olmo3Model (olmo3.py) share around their blocks: the blocks under the
    name the other models use, RoPE tables for the positions in use (a "global" and a "local"
    pair, from the subclass's `rope_pair`), a KV cache whose sliding-window layers keep only their
    window, and the forward: embed -> blocks -> final_norm -> out_head."""

    @property
    def trf_blocks(self):
        """The blocks under the name the other tinygpt models use (GPTModel, Qwen3Model)."""
        return self.blocks

    def embed(self, idx):
        return self.tok_emb(idx)                  # (b, T, emb)

    def rope_pair(self, n: int, dtype) -> dict:
        """{"global": (cos, sin), "local": (cos, sin)} for `n` positions: the model's RoPE."""
        raise NotImplementedError

    def rope_params(self, dtype, length: int | None = None):
        """{"global": (cos, sin), "local": (cos, sin)}, each (n, head_dim) with n >= `length`
        positions, built for the positions in use as RotaryModel's (rebuilt at least doubled)."""
        dtype, ctx = np.dtype(dtype), self.cfg["context_length"]
        length = ctx if length is None else length
        built = self._rope.get(dtype)
        have = 0 if built is None else built["global"][0].shape[0]
        if have < length:
            self._rope[dtype] = self.rope_pair(min(ctx, max(length, 2 * have)), dtype)
        return self._rope[dtype]

    def new_kv_cache(self, max_len: int | None = None) -> SlidingWindowKVCache:
        """An empty cache for up to `max_len` (default context_length) tokens; the sliding-window
        layers keep only their window."""
        max_len = KVCache.for_model(self.cfg, max_len).max_len  # checked: 1..context_length
        return SlidingWindowKVCache(self.cfg["layer_types"], self.cfg["sliding_window"], max_len)

    def forward(self, in_idx, kv_cache: KVCache | None = None, last_only: bool = False):
        idx, end = self.token_positions(in_idx, kv_cache)  # (b, T); positions .. end-1
        x = self.embed(idx)                       # (b, T, emb)
        tables = self.rope_params(x.dtype, end)   # global and local (cos, sin), (>= end, hd)
        for i, block in enumerate(self.blocks):
            layer_cache = None if kv_cache is None else kv_cache.layers[i]
            x = block(x, tables["global"], tables["local"], layer_cache)  # (b, T, emb)
        if last_only:
            x = x[:, -1:, :]                      # (b, 1, emb)
        x = self.final_norm(x)                    # (b, T or 1, emb)
        return self.out_head(x)                   # (b, T or 1, vocab)


class Gemma3Model(SlidingWindowModel):
    """`model(idx)`: token ids (batch, tokens) -> logits (batch, tokens, vocab_size).

    tok_emb (times sqrt(emb_dim)) -> blocks (each local or global, four norms) -> final_norm ->
    out_head (its own Linear as in the book; tied to tok_emb with cfg["tie_weights"], as the released
    checkpoints are and load_pretrained builds them). `forward(in_idx, kv_cache=None,
    last_only=False)` as GPTModel's, so `tinygpt.generate` (with its KV cache) and the training
    loop take it as is. Optional cfg keys: norm_eps (1e-6), rope_linear_factor (1.0),
    tie_weights (False); layer_types None means every sliding_window_pattern-th (6th) layer global."""

    def __init__(self, cfg):
        # the default layer kinds: 5 local, 1 global, ...
        cfg = windowed_config(cfg, GEMMA3_KEYS, "Gemma3Model",
                              lambda n, pattern: gemma3_layer_types(n, pattern or 6))
        super().__init__(cfg)                     # checks and keeps cfg (modern.RotaryModel)
        kinds = cfg["layer_types"]
        self.tok_emb = Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.blocks = ModuleList([TransformerBlock(cfg, attn_type) for attn_type in kinds])
        self.final_norm = GemmaRMSNorm(cfg["emb_dim"], eps=cfg.get("norm_eps", 1e-6))
        self.out_head = output_head(cfg, self.tok_emb)  # tied to tok_emb with cfg["tie_weights"]

    def embed(self, idx):
        return self.tok_emb(idx) * self.cfg["emb_dim"] ** 0.5  # (b, T, emb), scaled embeddings

    def rope_pair(self, n: int, dtype) -> dict:
        hd = self.cfg["head_dim"]
        return {"global": rope_tables_linear(hd, self.cfg["rope_base"], n,
                                             self.cfg.get("rope_linear_factor", 1.0), dtype),
                "local": rope_tables_linear(hd, self.cfg["rope_local_base"], n, 1.0, dtype)}
