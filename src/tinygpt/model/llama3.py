"""Llama 3.2, as the book repository's `ch05/07_gpt_to_llama` writes it: `Llama3Model` and the
config dicts of the 1B and 3B models, with the book's keys and module names, so state dicts
interchange with `llms_from_scratch.llama3.Llama3Model`.

Against Qwen3: no QK-norm, head_dim = emb_dim / n_heads, RMSNorm eps 1e-5 (torch.nn.RMSNorm, so
the norms' parameter is `weight`), and RoPE with Llama 3's frequency scaling (`rope_freq`): the
low frequencies are slowed by `factor` so that 8192 trained positions stretch to 131,072, the high
ones are kept, the band between is interpolated (tinygpt.ops.rope_tables). The released weights
are bf16; tinygpt computes in float32 (or float64), so the book's `"dtype"` key is left out.
"""
from .fast_modern import FastFeedForward, FastGroupedQueryAttention
from .modern import NNRMSNorm, RotaryModel

LLAMA32_CONFIG_1B = {
    "vocab_size": 128_256,           # vocabulary size
    "context_length": 131_072,       # context length the model was trained with
    "emb_dim": 2048,                 # embedding dimension
    "n_heads": 32,                   # query heads
    "n_layers": 16,                  # transformer blocks
    "hidden_dim": 8192,              # size of the feed-forward's intermediate layer
    "n_kv_groups": 8,                # key/value heads of grouped-query attention
    "rope_base": 500_000.0,          # the base "theta" of RoPE
    "rope_freq": {                   # RoPE frequency scaling
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_context_length": 8192,
    },
}

LLAMA32_CONFIG_3B = {**LLAMA32_CONFIG_1B, "emb_dim": 3072, "n_heads": 24, "n_layers": 28}

LLAMA32_CONFIGS = {"1B": LLAMA32_CONFIG_1B, "3B": LLAMA32_CONFIG_3B}


class Llama3Model(RotaryModel):
    """`model(idx)`: token ids (batch, tokens) -> logits (batch, tokens, vocab_size).

    tok_emb -> trf_blocks (each: x + att(norm1(x)), x + ff(norm2(x)), the attention with RoPE)
    -> final_norm -> out_head. `forward(in_idx, kv_cache=None, last_only=False)` as GPTModel's,
    so `tinygpt.generate` (with its KV cache) and the training loop take it as is."""

    norm, norm_eps, name = NNRMSNorm, 1e-5, "Llama3Model"
    attention, feed_forward = FastGroupedQueryAttention, FastFeedForward  # fast_modern.py

    def __init__(self, cfg):
        super().__init__({**cfg, "qk_norm": False, "head_dim": cfg.get("head_dim")})
