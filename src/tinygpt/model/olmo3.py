"""Olmo 3 (Ai2), in the book's style (the book repository's `ch05/13_olmo3`): `Olmo3Model` and the
7B config dict, with the module names of the Gemma 3 port (gemma3.py): `blocks`, and the norms
named as Hugging Face names them.

What changed from Qwen3 (qwen3.py) and Gemma 3 (gemma3.py):

* Post-norm inside the residual: x + post_attention_layernorm(att(x)), then
  x + post_feedforward_layernorm(ff(x)). Nothing normalises a block's input (Qwen3 normalises
  only the input, Gemma 3 both).
* QK-norm over the whole query and key projections (H * head_dim and G * head_dim values), not
  per head as in Qwen3 and Gemma 3.
* Sliding-window attention on three of every four layers (window 4096), full attention on the
  fourth, with the same RoPE base on both; the full layers' RoPE may be stretched by YaRN (the
  7B model: factor 8 over 8192 trained positions), `rope_yarn` below.
* SwiGLU feed-forward (modern.FeedForward), plain RMSNorm (parameter `weight`), untied head.
"""
import math

import numpy as np

from ..nn import Embedding, Module, ModuleList
from ..ops import causal_attention, rope
from .gemma3 import GLOBAL, LOCAL, SlidingWindowModel, windowed_config
from .modern import FeedForward, GroupedQueryAttention, RMSNorm, output_head


def olmo3_layer_types(n_layers: int, pattern: int = 4) -> list:
    """Three sliding-window layers, then one full-attention layer, repeated."""
    return [GLOBAL if (i + 1) % pattern == 0 else LOCAL for i in range(n_layers)]


OLMO3_CONFIG_7B = {
    "vocab_size": 100_278,           # vocabulary size
    "context_length": 65_536,        # context length (with YaRN on the full-attention layers)
    "emb_dim": 4096,                 # embedding dimension
    "n_heads": 32,                   # query heads
    "n_layers": 32,                  # transformer blocks
    "hidden_dim": 11_008,            # size of the feed-forward's intermediate layer
    "head_dim": 128,                 # size of each head
    "n_kv_groups": 32,               # key/value heads (32: plain multi-head attention)
    "rope_base": 500_000.0,          # RoPE base "theta" of every layer
    "sliding_window": 4096,          # tokens a sliding-window layer's query sees
    "layer_types": olmo3_layer_types(32),
    "norm_eps": 1e-6,                # RMSNorm eps
    "rope_yarn": {"factor": 8.0, "original_context_length": 8192, "beta_fast": 32.0,
                  "beta_slow": 1.0, "attention_factor": 1.2079441541679836},
}

OLMO3_CONFIGS = {"7B": OLMO3_CONFIG_7B}


def yarn_inv_freq(head_dim: int, base: float, factor: float, original_context_length: int,
                  beta_fast: float = 32.0, beta_slow: float = 1.0):
    """YaRN's frequencies: the fast ones (more than beta_fast turns over the trained context) kept,
    the slow ones (fewer than beta_slow turns) divided by `factor`, a linear ramp between."""
    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (hd/2,)

    def dim_of(turns):  # the dimension whose wavelength fits `turns` times in the trained context
        return head_dim * math.log(original_context_length / (turns * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(dim_of(beta_fast)), 0)
    high = min(math.ceil(dim_of(beta_slow)), head_dim - 1)
    ramp = np.clip((np.arange(head_dim // 2) - low) / max(high - low, 0.001), 0.0, 1.0)  # (hd/2,)
    keep = 1.0 - ramp                                   # 1: extrapolate (keep), 0: interpolate
    return inv_freq / factor * (1.0 - keep) + inv_freq * keep


def olmo3_rope_tables(head_dim: int, base: float, n: int, yarn: dict | None, dtype):
    """(cos, sin), each (n, head_dim), computed in float64: plain RoPE, or with `yarn` its
    frequencies and both tables times attention_factor (0.1 ln(factor) + 1 unless given)."""
    if yarn is None:
        inv_freq, scale = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim), 1.0
    else:
        inv_freq = yarn_inv_freq(head_dim, base, yarn["factor"], yarn["original_context_length"],
                                 yarn.get("beta_fast", 32.0), yarn.get("beta_slow", 1.0))
        scale = yarn.get("attention_factor") or 0.1 * math.log(yarn["factor"]) + 1.0
    angles = np.arange(n, dtype=np.float64)[:, None] * inv_freq[None, :]  # (n, hd/2)
    angles = np.concatenate([angles, angles], axis=1)                     # (n, hd)
    return (np.cos(angles) * scale).astype(dtype), (np.sin(angles) * scale).astype(dtype)


class Olmo3Attention(GroupedQueryAttention):
    """Qwen3's grouped-query attention (model/modern.py: the same four projections) with QK-norm
    over the whole projections (q_norm over H * hd values, k_norm over G * hd) instead of per
    head, scores scaled by 1 / sqrt(head_dim), and on a sliding-window layer (`sliding_window`
    set) the window mask."""

    def __init__(self, d_in: int, num_heads: int, num_kv_groups: int, head_dim: int,
                 sliding_window: int | None = None, norm_eps: float = 1e-6):
        super().__init__(d_in, num_heads, num_kv_groups, head_dim)  # W_query .. out_proj
        self.sliding_window = sliding_window
        self.q_norm = RMSNorm(self.d_out, eps=norm_eps, param_name="weight")
        self.k_norm = RMSNorm(num_kv_groups * head_dim, eps=norm_eps, param_name="weight")

    def forward(self, x, cos, sin, kv_cache=None):
        b, num_tokens, _ = x.shape
        start = 0 if kv_cache is None else kv_cache.length  # position of the first new token
        queries = self.q_norm(self.W_query(x))            # (b, T, H*hd), normed as one vector
        keys = self.k_norm(self.W_key(x))                 # (b, T, G*hd)
        values = self.W_value(x)                          # (b, T, G*hd)
        queries = queries.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)    # (b, H, T, hd)
        keys = keys.view(b, num_tokens, self.num_kv_groups, self.head_dim).transpose(1, 2)      # (b, G, T, hd)
        values = values.view(b, num_tokens, self.num_kv_groups, self.head_dim).transpose(1, 2)  # (b, G, T, hd)
        queries = rope(queries, cos, sin, offset=start)   # (b, H, T, hd), rotated by position
        keys = rope(keys, cos, sin, offset=start)         # (b, G, T, hd)
        if kv_cache is not None:  # generation: the new keys/values join the cached ones
            keys, values = kv_cache.append(keys, values)  # (b, G, L, hd)
        # gemma3.py's sliding_window_attention in one blocked kernel (window None: fully causal)
        context = causal_attention(queries, keys, values, window=self.sliding_window)  # (b, H, T, hd)
        context = context.transpose(1, 2).reshape(b, num_tokens, self.d_out)  # (b, T, H*hd)
        return self.out_proj(context)                     # (b, T, emb)


class TransformerBlock(Module):
    """Post-norm: x + post_attention_layernorm(att(x)), then x + post_feedforward_layernorm(ff(x))."""

    def __init__(self, cfg, attn_type: str):
        super().__init__()
        emb, eps = cfg["emb_dim"], cfg.get("norm_eps", 1e-6)
        self.attn_type = attn_type
        self.att = Olmo3Attention(emb, cfg["n_heads"], cfg["n_kv_groups"], cfg["head_dim"],
                                  cfg["sliding_window"] if attn_type == LOCAL else None, eps)
        self.ff = FeedForward(cfg)                # SwiGLU: fc1, fc2, fc3
        self.post_attention_layernorm = RMSNorm(emb, eps=eps, param_name="weight")
        self.post_feedforward_layernorm = RMSNorm(emb, eps=eps, param_name="weight")

    def forward(self, x, rope_global, rope_local, kv_cache=None):
        cos, sin = rope_local if self.attn_type == LOCAL else rope_global  # (n, hd) each
        shortcut = x                              # (b, T, emb)
        x = self.att(x, cos, sin, kv_cache)       # (b, T, emb)
        x = self.post_attention_layernorm(x)      # (b, T, emb)
        x = x + shortcut                          # (b, T, emb)
        shortcut = x
        x = self.ff(x)                            # (b, T, emb)
        x = self.post_feedforward_layernorm(x)    # (b, T, emb)
        return x + shortcut                       # (b, T, emb)


OLMO3_KEYS = ("head_dim", "sliding_window", "layer_types")


class Olmo3Model(SlidingWindowModel):
    """`model(idx)`: token ids (batch, tokens) -> logits (batch, tokens, vocab_size).

    tok_emb -> blocks (sliding-window or full, post-norm) -> final_norm -> out_head.
    `forward(in_idx, kv_cache=None, last_only=False)` as GPTModel's. Optional cfg keys: norm_eps
    (1e-6), rope_local_base (default rope_base), rope_yarn (None: plain RoPE on the full layers),
    tie_weights (False); layer_types None means every fourth layer full."""

    def __init__(self, cfg):
        cfg = windowed_config({**cfg, "qk_norm": True},   # QK-norm always (over whole projections)
                              OLMO3_KEYS, "Olmo3Model",
                              lambda n, pattern: olmo3_layer_types(n, pattern or 4))
        super().__init__(cfg)                     # checks and keeps cfg (modern.RotaryModel)
        kinds = cfg["layer_types"]
        self.tok_emb = Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.blocks = ModuleList([TransformerBlock(cfg, attn_type) for attn_type in kinds])
        self.final_norm = RMSNorm(cfg["emb_dim"], eps=cfg.get("norm_eps", 1e-6), param_name="weight")
        self.out_head = output_head(cfg, self.tok_emb)  # tied to tok_emb with cfg["tie_weights"]

    def rope_pair(self, n: int, dtype) -> dict:
        hd, base = self.cfg["head_dim"], self.cfg["rope_base"]
        return {"global": olmo3_rope_tables(hd, base, n, self.cfg.get("rope_yarn"), dtype),
                "local": olmo3_rope_tables(hd, self.cfg.get("rope_local_base", base), n, None, dtype)}
