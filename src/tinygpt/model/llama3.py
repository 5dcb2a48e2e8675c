"""Llama 3.2, as the book repository's `ch05/07_gpt_to_llama` writes it: `Llama3Model` and the
config dicts of the 1B and 3B models, with the book's keys and module names, so state dicts
interchange with `llms_from_scratch.llama3.Llama3Model`.

Against Qwen3: no QK-norm, head_dim = emb_dim / n_heads, RMSNorm eps 1e-5 (torch.nn.RMSNorm, so
the norms' parameter is `weight`), and RoPE with Llama 3's frequency scaling (`rope_freq`): the
low frequencies are slowed by `factor` so that 8192 trained positions stretch to 131,072, the high
ones are kept, the band between is interpolated (tinygpt.ops.rope_tables). The released weights
are bf16; tinygpt computes in float32 (or float64), so the book's `"dtype"` key is left out.
"""
from ..nn import Embedding, ModuleList
from .modern import (FeedForward, GroupedQueryAttention, RMSNorm, RotaryModel, TransformerBlock,
                     output_head)

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
    -> final_norm -> out_head. `forward(in_idx, kv_cache=None, last_only=False)` as GPTModel's
    (RotaryModel, modern.py), so `tinygpt.generate` (with its KV cache) and the training loop
    take it as is. The norms are torch.nn.RMSNorm's, as the book uses: parameter `weight`."""

    def __init__(self, cfg):
        cfg = {**cfg, "qk_norm": False, "head_dim": cfg.get("head_dim")}
        super().__init__(cfg)                     # checks and keeps cfg (modern.RotaryModel)
        emb, eps = cfg["emb_dim"], cfg.get("norm_eps", 1e-5)
        self.tok_emb = Embedding(cfg["vocab_size"], emb)
        self.trf_blocks = ModuleList([
            TransformerBlock(
                att=GroupedQueryAttention(emb, cfg["n_heads"], cfg["n_kv_groups"],
                                          head_dim=cfg["head_dim"]),  # None: emb_dim / n_heads
                ff=FeedForward(cfg),              # SwiGLU: fc1, fc2, fc3
                norm1=RMSNorm(emb, eps=eps, param_name="weight"),
                norm2=RMSNorm(emb, eps=eps, param_name="weight"))
            for _ in range(cfg["n_layers"])])
        self.final_norm = RMSNorm(emb, eps=eps, param_name="weight")
        self.out_head = output_head(cfg, self.tok_emb)  # tied to tok_emb with cfg["tie_weights"]
