"""Gemma-3-270M and a Qwen3 MoE model on a CPU (issue 42): decode speed of tinygpt against
transformers, on the same weights, in one process, 1 and 2 threads.

    python bench/generate_families.py                      # both models, 1 then 2 threads
    python bench/generate_families.py --model gemma3-270m --threads 2
    python bench/generate_families.py --smoke              # tiny configs: checks the script runs

Random float32 weights at the published shapes, batch 1, greedy:
  gemma3-270m  GEMMA3_CONFIG_270M, the head tied to the embedding as published (268M parameters)
  qwen3-moe    Qwen3-30B-A3B's blocks (emb 2048, 32 query / 4 key-value heads of 128, experts of
               width 768 with 8 chosen per token, vocabulary 151,936, untied head) but 2 blocks of
               32 experts instead of 48 blocks of 128: the 30.5B-parameter model takes 122 GB in
               float32, and both runners hold their own copy; a token still runs 8 experts per
               block, as in the real model (0.96B parameters here, 3.8 GB per copy; the head's
               1.24 GB is most of what a token reads, where the real model's 48 blocks read
               ~10.9 GB)
Runners: `tinygpt` is tinygpt.generate with the KV cache (window = prompt + new tokens) on the
model readied by `tinygpt.model.for_inference`, as the CLI runs it; `transformers` is
Gemma3ForCausalLM / Qwen3MoeForCausalLM `.from_pretrained` of the folder `save_pretrained_hf`
wrote, `generate(do_sample=False)` with its KV cache. Both must produce the same greedy tokens
(asserted). Decode tok/s: after a `--prompt-tokens` prompt, (time for n + 1 new tokens - time
for 1) / n, so the prompt's cost cancels; the runners alternate, `--repeats` times, and each
figure is the median. "background cores": other processes' CPU over the timed calls.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import LoadMeter, busy, header, hf_class, markdown_table, require, set_threads  # noqa: E402


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["gemma3-270m", "qwen3-moe", "all"], default="all")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--prompt-tokens", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="tiny configs, a few tokens (no figures)")
    p.add_argument("--seed", type=int, default=123)
    return p.parse_args(argv)


ARGS = _parse_args() if __name__ == "__main__" else _parse_args([])

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
import tinygpt as tg  # noqa: E402
from tinygpt.model import (GEMMA3_CONFIG_270M, QWEN3_MOE_CONFIG_30B_A3B, Gemma3Model,  # noqa: E402
                           Qwen3MoeModel, for_inference, generate)
from tinygpt.weights import save_pretrained_hf  # noqa: E402

MOE_BENCH = {**QWEN3_MOE_CONFIG_30B_A3B, "n_layers": 2, "num_experts": 32, "context_length": 4096}
MODELS = {"gemma3-270m": (Gemma3Model, {**GEMMA3_CONFIG_270M, "tie_weights": True}, "Gemma3ForCausalLM"),
          "qwen3-moe": (Qwen3MoeModel, MOE_BENCH, "Qwen3MoeForCausalLM")}
SMOKE = {"gemma3-270m": {"vocab_size": 512, "emb_dim": 64, "n_layers": 3, "hidden_dim": 96,
                         "head_dim": 16, "sliding_window": 4, "layer_types": None,
                         "context_length": 256, "query_pre_attn_scalar": 16},
         "qwen3-moe": {"vocab_size": 512, "emb_dim": 64, "n_layers": 2, "n_heads": 4,
                       "head_dim": 16, "num_experts": 8, "num_experts_per_tok": 2,
                       "moe_intermediate_size": 32, "context_length": 256}}


def build(key):
    cls, cfg, _ = MODELS[key]
    cfg = {**cfg, **SMOKE[key]} if ARGS.smoke else dict(cfg)
    tg.manual_seed(ARGS.seed)
    return for_inference(cls(cfg)).eval()  # the fast generation layers, as the CLI uses


def runners(key, model, folder):
    """{name: generate(ids (1, n) int64, new_tokens) -> (1, n + new) token ids}."""
    import torch
    hf = hf_class(MODELS[key][2]).from_pretrained(folder, dtype=torch.float32).eval()

    def hf_generate(ids, n):
        with torch.no_grad():
            return hf.generate(torch.from_numpy(ids), max_new_tokens=n, min_new_tokens=n,
                               do_sample=False, pad_token_id=0, eos_token_id=None).numpy()
    return {"tinygpt": lambda ids, n: generate(model, ids, n, ids.shape[1] + n),
            "transformers": hf_generate}


def seconds(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def decode_rates(gens, prompt, meters):
    """{name: [decode tok/s per repeat]}, the runners alternating within each repeat."""
    n, rates = ARGS.new_tokens, {name: [] for name in gens}
    for _ in range(ARGS.repeats):
        for name, gen in gens.items():
            with meters[name]:
                rates[name].append(n / (seconds(gen, prompt, n + 1) - seconds(gen, prompt, 1)))
    return rates


def bench_model(key):
    model = build(key)
    prompt = np.random.default_rng(ARGS.seed).integers(
        0, model.cfg["vocab_size"], (1, ARGS.prompt_tokens)).astype(np.int64)
    params = sum(p.data.size for p in {id(p.data): p for p in model.parameters()}.values())
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained_hf(model, folder)
        gens = runners(key, model, folder)
        tokens = {name: np.asarray(gen(prompt, 8))[0, -8:].tolist() for name, gen in gens.items()}
        assert tokens["tinygpt"] == tokens["transformers"], f"greedy tokens differ: {tokens}"
        for threads in ARGS.threads:
            set_threads(threads)
            meters = {name: LoadMeter() for name in gens}
            rates = decode_rates(gens, prompt, meters)
            medians = {name: statistics.median(r) for name, r in rates.items()}
            for name, rate in medians.items():
                load = meters[name].other / meters[name].wall
                mark = " *" if busy(load, threads) else ""
                ratio = f"{rate / medians['transformers']:.2f}" if name == "tinygpt" else ""
                rows.append([key, name, threads, f"{rate:.2f}{mark}", ratio,
                             " ".join(f"{r:.1f}" for r in rates[name]), f"{load:.2f}"])
    print(f"{key}: {params / 1e6:.0f}M parameters, greedy tokens agree: {tokens['tinygpt']}")
    print(markdown_table(["model", "runner", "threads", "decode tok/s (median)", "vs transformers",
                          "repeats tok/s", "background cores"], rows) + "\n", flush=True)


def main():
    require("torch", "transformers")
    import torch  # noqa: F401  (loaded before set_threads, so its pool is set too)
    if ARGS.smoke:
        ARGS.prompt_tokens, ARGS.new_tokens, ARGS.repeats = 4, 3, 1
    print(header("tinygpt model-family decode bench (bench/generate_families.py)"))
    print(f"float32, batch 1, greedy, random weights, {ARGS.prompt_tokens}-token prompt, "
          f"{ARGS.new_tokens} timed tokens, median of {ARGS.repeats} alternating repeats"
          + (" (SMOKE: tiny configs, figures meaningless)" if ARGS.smoke else ""))
    for key in (MODELS if ARGS.model == "all" else [ARGS.model]):
        bench_model(key)
    print("*: taken while other processes used > 0.2 cores (2 threads): not a quiet-machine figure.")


if __name__ == "__main__":
    main()
