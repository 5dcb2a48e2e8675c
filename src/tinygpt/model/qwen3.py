"""Qwen3 (dense), as the book repository's `ch05/11_qwen3` writes it: `Qwen3Model` and the config
dicts of the 0.6B, 1.7B, 4B and 8B models, with the book's keys and module names, so state dicts
interchange with `llms_from_scratch.qwen3.Qwen3Model`.

Qwen3 is Llama-shaped (RMSNorm, RoPE, grouped-query attention, SwiGLU; modern.py has the pieces)
plus QK-norm: an RMSNorm over head_dim on every query and key head (`att.q_norm`, `att.k_norm`),
and a head_dim set on its own rather than emb_dim / n_heads. All RMSNorms use eps 1e-6. The
released weights are bf16; tinygpt computes in float32 (or float64), so the book's `"dtype"` key
is left out here.
"""
from ..nn import Embedding, ModuleList
from .modern import (FeedForward, GroupedQueryAttention, RMSNorm, RotaryModel, TransformerBlock,
                     output_head)

# 0.6 billion parameters
QWEN3_CONFIG_0_6B = {
    "vocab_size": 151_936,           # vocabulary size
    "context_length": 40_960,        # context length the model was trained with
    "emb_dim": 1024,                 # embedding dimension
    "n_heads": 16,                   # query heads
    "n_layers": 28,                  # transformer blocks
    "hidden_dim": 3072,              # size of the feed-forward's intermediate layer
    "head_dim": 128,                 # size of each head (16 * 128 = 2048 != emb_dim)
    "qk_norm": True,                 # RMSNorm on queries and keys
    "n_kv_groups": 8,                # key/value heads of grouped-query attention
    "rope_base": 1_000_000.0,        # the base "theta" of RoPE
}

QWEN3_CONFIG_1_7B = {**QWEN3_CONFIG_0_6B, "emb_dim": 2048, "hidden_dim": 6144}
QWEN3_CONFIG_4B = {**QWEN3_CONFIG_0_6B, "emb_dim": 2560, "n_heads": 32, "n_layers": 36,
                   "hidden_dim": 9728}
QWEN3_CONFIG_8B = {**QWEN3_CONFIG_0_6B, "emb_dim": 4096, "n_heads": 32, "n_layers": 36,
                   "hidden_dim": 12288}

QWEN3_CONFIGS = {"0.6B": QWEN3_CONFIG_0_6B, "1.7B": QWEN3_CONFIG_1_7B, "4B": QWEN3_CONFIG_4B,
                 "8B": QWEN3_CONFIG_8B}


class Qwen3Model(RotaryModel):
    """`model(idx)`: token ids (batch, tokens) -> logits (batch, tokens, vocab_size).

    tok_emb -> trf_blocks (each: x + att(norm1(x)), x + ff(norm2(x)), the attention with QK-norm
    and RoPE) -> final_norm -> out_head. `forward(in_idx, kv_cache=None, last_only=False)` as
    GPTModel's (RotaryModel, modern.py), so `tinygpt.generate` (with its KV cache) and the
    training loop take it as is. `feed_forward` builds each block's feed-forward from cfg: the
    SwiGLU FeedForward here, MoEFeedForward in Qwen3MoeModel (moe.py), as the book's Qwen3 file
    picks one by cfg["num_experts"]."""

    def __init__(self, cfg, feed_forward=FeedForward):
        cfg = {"qk_norm": True, **cfg}
        super().__init__(cfg)                     # checks and keeps cfg (modern.RotaryModel)
        emb, eps = cfg["emb_dim"], cfg.get("norm_eps", 1e-6)
        self.tok_emb = Embedding(cfg["vocab_size"], emb)
        self.trf_blocks = ModuleList([
            TransformerBlock(
                att=GroupedQueryAttention(emb, cfg["n_heads"], cfg["n_kv_groups"],
                                          head_dim=cfg.get("head_dim"), qk_norm=cfg["qk_norm"],
                                          norm_eps=eps),
                ff=feed_forward(cfg),             # SwiGLU: fc1, fc2, fc3 (or experts of them)
                norm1=RMSNorm(emb, eps=eps),
                norm2=RMSNorm(emb, eps=eps))
            for _ in range(cfg["n_layers"])])
        self.final_norm = RMSNorm(emb, eps=eps)
        self.out_head = output_head(cfg, self.tok_emb)  # tied to tok_emb with cfg["tie_weights"]
