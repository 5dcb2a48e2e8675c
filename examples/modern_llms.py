"""Beyond the book: Qwen3, Llama 3.2, Gemma 3, Olmo 3 and Qwen3 MoE on the tinygpt engine, offline.

A tiny random model of each family is written in the Hugging Face format (config.json
+ model.safetensors, the layout of the real checkpoints), loaded back with `load_pretrained`,
asked to generate (greedy, with the KV cache, and sampled with top-p), and trained for a few
steps. On the way it prints what each architectural piece is and where it lives in the code.
The weights are random, so the "text" is token ids: the point is the machinery.

    python examples/modern_llms.py

With a real checkpoint (downloaded once from the Hugging Face Hub; gated ones need HF_TOKEN) the
same loader sits behind the command line, each family with its own tokenizer and chat template:

    tinygpt chat --model google/gemma-3-270m-it         # Gemma 3: <start_of_turn>user ...
    tinygpt chat --model allenai/Olmo-3-7B-Instruct     # Olmo 3: <|im_start|>system ... (29 GB fp32)
    tinygpt chat --model Qwen/Qwen3-30B-A3B             # Qwen3 MoE: Qwen3's template (122 GB fp32)
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np

import tinygpt as tg
from tinygpt import tune_malloc
from tinygpt.model import (Gemma3Model, Llama3Model, Olmo3Model, Qwen3Model, Qwen3MoeModel,
                           for_inference)
from tinygpt.weights import load_pretrained, save_pretrained_hf

TINY_QWEN3 = {"vocab_size": 64, "context_length": 48, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
              "hidden_dim": 64, "head_dim": 16, "qk_norm": True, "n_kv_groups": 2,
              "rope_base": 1_000_000.0, "tie_weights": False}
TINY_LLAMA = {"vocab_size": 64, "context_length": 48, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
              "hidden_dim": 64, "n_kv_groups": 1, "rope_base": 500_000.0, "tie_weights": False,
              "rope_freq": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_context_length": 16}}
# five local layers with a window of 8 tokens, then a global one (layer_types None: Gemma's pattern)
TINY_GEMMA3 = {"vocab_size": 64, "context_length": 48, "emb_dim": 32, "n_heads": 4, "n_layers": 6,
               "hidden_dim": 64, "head_dim": 16, "n_kv_groups": 1, "rope_base": 1_000_000.0,
               "rope_local_base": 10_000.0, "sliding_window": 8, "layer_types": None,
               "query_pre_attn_scalar": 16}
# three sliding-window layers (window 8), then a full one stretched by YaRN
TINY_OLMO3 = {"vocab_size": 64, "context_length": 48, "emb_dim": 32, "n_heads": 4, "n_layers": 4,
              "hidden_dim": 64, "head_dim": 8, "n_kv_groups": 2, "rope_base": 500_000.0,
              "sliding_window": 8, "layer_types": None,
              "rope_yarn": {"factor": 4.0, "original_context_length": 16}}
# 8 experts of width 32 per block, 2 chosen per token
TINY_MOE = {"vocab_size": 64, "context_length": 48, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
            "head_dim": 8, "n_kv_groups": 2, "rope_base": 1_000_000.0, "num_experts": 8,
            "num_experts_per_tok": 2, "moe_intermediate_size": 32}

PIECES = [
    ("RMSNorm", "x / sqrt(mean(x^2) + eps) * scale: LayerNorm without the mean and the shift",
     "tinygpt/ops/modern.py RMSNormFn (op), tinygpt/model/modern.py RMSNorm (module; its parameter is "
     "`scale` in Qwen3, `weight` in Llama 3 as torch.nn.RMSNorm names it)"),
    ("RoPE", "queries and keys rotated pairwise by position * frequency; no position table",
     "tinygpt/ops/modern.py Rope, rope_tables (Llama 3's frequency scaling: _llama3_scaled)"),
    ("Grouped-query attention", "n_heads query heads share n_kv_groups key/value heads; a "
     "broadcast product, so the keys are never repeated and the KV cache holds only the groups",
     "tinygpt/ops/modern.py grouped_query_attention, tinygpt/model/modern.py GroupedQueryAttention"),
    ("QK-norm (Qwen3)", "an RMSNorm over head_dim on every query and key head, before RoPE",
     "GroupedQueryAttention.q_norm / k_norm"),
    ("SwiGLU", "fc3(silu(fc1(x)) * fc2(x)) in place of Linear-GELU-Linear",
     "tinygpt/ops/modern.py Silu, tinygpt/model/modern.py FeedForward"),
    ("Sliding-window attention (Gemma 3)", "on local layers a query sees only its last "
     "sliding_window tokens; every sixth layer is global; the local layers' KV cache keeps only "
     "the window, so its memory stays bounded", "tinygpt/model/gemma3.py sliding_window_attention, "
     "Gemma3Attention, SlidingLayerKVCache"),
    ("Gemma 3's other changes", "two RoPE bases (local 10k, global 1M), RMSNorm before and after "
     "attention and feed-forward with (1 + scale), GELU-gated feed-forward (GeGLU), embeddings "
     "times sqrt(emb_dim), tied head", "tinygpt/model/gemma3.py GemmaRMSNorm, GemmaFeedForward, "
     "TransformerBlock, Gemma3Model"),
    ("Post-norm and whole-projection QK-norm (Olmo 3)", "x + norm(att(x)) and x + norm(ff(x)); "
     "q_norm over all H * head_dim query values; three sliding-window layers per full one, YaRN "
     "on the full ones", "tinygpt/model/olmo3.py Olmo3Attention, TransformerBlock, yarn_inv_freq"),
    ("Mixture of experts (Qwen3 MoE)", "a router picks num_experts_per_tok of num_experts SwiGLU "
     "experts per token; only those run, on the tokens gathered for them; the weighted outputs "
     "are put back by one inverse permutation; router_stats holds the load-balancing loss",
     "tinygpt/model/moe.py MoEFeedForward, load_balancing, Qwen3MoeModel"),
    ("Hugging Face weights", "config.json + safetensors (bf16 widened), names mapped to the book's",
     "tinygpt/weights/hf.py load_pretrained, hf_names.py (one name table per family)"),
    ("Fast generation", "one explicit step swaps the attention and feed-forward layers for twins "
     "that pack Q/K/V and fc1/fc2 into one product each and decode with one kernel call per layer",
     "tinygpt/model/inference.py for_inference (fast_modern.py, packing.py)"),
]


def describe(model):
    n = sum(p.size for p in model.parameters())
    att = model.trf_blocks[0].att
    print(f"  {type(model).__name__}: {n:,} parameters, {len(model.trf_blocks)} blocks, "
          f"{att.num_heads} query heads / {att.num_kv_groups} key-value heads of {att.head_dim}, "
          f"tied head: {model.weights_tied}")


def train_a_little(model, steps=40):
    """Next-token prediction on one sequence, 0 1 2 ... 10 0 1 ...: afterwards the model continues it."""
    ids = (np.arange(33) % 11)[None, :]                       # (1, 33)
    model.train()
    opt = tg.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for step in range(steps):
        opt.zero_grad()
        logits = model(ids[:, :-1])                           # (1, 32, vocab)
        loss = tg.nn.functional.cross_entropy(logits.flatten(0, 1), ids[0, 1:])
        loss.backward()                                       # through every new op
        opt.step()
        if step in (0, steps - 1):
            print(f"  step {step + 1:2d}: loss {float(loss.data):.3f}")
    return model.eval()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    tune_malloc()  # an application's choice: see tinygpt/core/malloc.py
    print("The pieces, and where they live:")
    for name, what, where in PIECES:
        print(f"- {name}: {what}\n    {where}")
    tg.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for cls, cfg in ((Qwen3Model, TINY_QWEN3), (Llama3Model, TINY_LLAMA),
                         (Gemma3Model, TINY_GEMMA3), (Olmo3Model, TINY_OLMO3),
                         (Qwen3MoeModel, TINY_MOE)):
            directory = save_pretrained_hf(cls(cfg), Path(tmp) / cls.__name__)
            print(f"\n{cls.__name__}: wrote {', '.join(sorted(p.name for p in directory.iterdir()))}")
            model = load_pretrained(directory)                # the class comes from model_type
            describe(model)
            model = for_inference(model)  # the fast layers: same weights, same tokens, faster
            prompt = np.array([[1, 2, 3]])
            greedy = tg.generate(model, prompt, 10, cfg["context_length"])
            print(f"  greedy (KV cache): {greedy[0].tolist()}")
            tg.manual_seed(1)
            sampled = tg.generate(model, prompt, 10, cfg["context_length"], temperature=0.8,
                                  top_k=20, top_p=0.9)
            print(f"  sampled (T=0.8, top-k 20, top-p 0.9): {sampled[0].tolist()}")
            train_a_little(model)  # training records a graph: the fast layers run the book's forward
            print(f"  after training, greedy: {tg.generate(model, prompt, 10, 48)[0].tolist()}")
    print("\nA real checkpoint talks through its own tokenizer and chat template: tinygpt chat "
          "--model google/gemma-3-270m-it (or allenai/Olmo-3-7B-Instruct, Qwen/Qwen3-30B-A3B)")


if __name__ == "__main__":
    main()
