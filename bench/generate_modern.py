"""Qwen3-0.6B and Llama-3.2-1B on a CPU (issue 32's table): decode and prefill speed against the
book's PyTorch KV-cache models and transformers, and the peak memory of `load_pretrained` followed
by `for_inference`.

    python bench/generate_modern.py                       # both models, 1 thread
    python bench/generate_modern.py --model qwen3-0.6b --threads 2
    python bench/generate_modern.py --smoke               # tiny configs: checks the script runs

The real configurations (`QWEN3_CONFIG_0_6B`, `LLAMA32_CONFIG_1B`, tied embeddings as published)
with random weights, float32, batch 1, greedy, every runner on the same weights in one process
with the same threads:
  tinygpt       tinygpt.generate with the KV cache (the window sized to prompt + new tokens), on
                the model readied by `tinygpt.model.for_inference`
  book-kv-cache the book's `llms_from_scratch.kv_cache.{qwen3,llama3}` model and its
                `kv_cache.generate.generate_text_simple`, given tinygpt's state dict
  transformers  `Qwen3ForCausalLM` / `LlamaForCausalLM.from_pretrained` of the directory
                `save_pretrained_hf` wrote, `generate(do_sample=False)`
Decode tok/s: after a `--prompt-tokens`-token prompt, (time for n + 1 new tokens - time for 1)
/ n, so the prompt's cost cancels. Prefill tok/s: a `--prefill-tokens` prompt, one new token.
"x bound": ms per decoded token over (weight bytes + mean KV-cache bytes per token) / bandwidth,
the faster of a copy (bench/generate.py's `memory_bandwidth`, read + written bytes / s) and a
read-only sum (`sum_bandwidth`) by the same threads. Peak RSS: a child process loads the
directory with `load_pretrained` and readies it with `for_inference`; its peak RSS growth over
the RSS after imports is divided by the loaded parameters' bytes. "background cores": other
processes' CPU over the timed calls.
Targets (issue 32): decode >= 1.2x the faster reference and within
1.3x of the bound; peak RSS growth <= 1.2x the model.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import LoadMeter, busy, header, markdown_table, require, set_threads, thread_env  # noqa: E402


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["qwen3-0.6b", "llama3.2-1b", "all"], default="all")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prompt-tokens", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--prefill-tokens", type=int, default=512)
    p.add_argument("--runners", nargs="*", default=["tinygpt", "book-kv-cache", "transformers"])
    p.add_argument("--smoke", action="store_true", help="tiny configs, a few tokens (no figures)")
    p.add_argument("--seed", type=int, default=123)
    return p.parse_args(argv)


ARGS = _parse_args() if __name__ == "__main__" else _parse_args([])
if __name__ == "__main__":  # before NumPy/torch load, or it has no effect
    os.environ.update({k: v for k, v in thread_env(ARGS.threads).items() if k.endswith("NUM_THREADS")})

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tinygpt as tg  # noqa: E402
from tinygpt.model import (LLAMA32_CONFIG_1B, QWEN3_CONFIG_0_6B, Llama3Model, Qwen3Model,  # noqa: E402
                           for_inference, generate)
from tinygpt.weights import save_pretrained_hf  # noqa: E402

SMOKE = {"vocab_size": 512, "emb_dim": 64, "n_heads": 4, "n_layers": 2, "hidden_dim": 128,
         "head_dim": 16, "n_kv_groups": 2}
MODELS = {"qwen3-0.6b": (Qwen3Model, QWEN3_CONFIG_0_6B, "qwen3", "Qwen3ForCausalLM"),
          "llama3.2-1b": (Llama3Model, LLAMA32_CONFIG_1B, "llama3", "LlamaForCausalLM")}
# VmHWM, not getrusage's ru_maxrss: a child's ru_maxrss starts at the RSS its parent had when
# it forked (here several GB of models), so its growth would read 0
RSS_CHILD = """import sys
import tinygpt
from tinygpt.model import for_inference
from tinygpt.weights import load_pretrained
def kb(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))
base = kb("VmRSS")
model = for_inference(load_pretrained(sys.argv[1]))
size = sum(p.data.nbytes for p in {id(p.data): p for p in model.parameters()}.values())
print((kb("VmHWM") - base) * 1024, kb("VmHWM") * 1024, size)
"""


def build(key):
    cls, cfg, _, _ = MODELS[key]
    cfg = {**cfg, **SMOKE, "context_length": 1024} if ARGS.smoke else dict(cfg)
    cfg["tie_weights"] = True  # as both published checkpoints are: out_head reads tok_emb's table
    if ARGS.smoke and cls is Llama3Model:
        cfg.pop("head_dim")
    tg.manual_seed(ARGS.seed)
    return for_inference(cls(cfg)).eval()  # the fast generation layers, as the CLI uses


def book_model(key, model):
    """The book's KV-cache model holding tinygpt's parameter buffers (assign=True: its own random
    ones are dropped, not kept beside them)."""
    import importlib
    import torch
    mod = importlib.import_module(f"llms_from_scratch.kv_cache.{MODELS[key][2]}")
    cls = mod.Qwen3Model if key.startswith("qwen3") else mod.Llama3Model
    theirs = cls({**model.cfg, "dtype": torch.float32})
    sd = {k: torch.from_numpy(np.asarray(v)) for k, v in model.state_dict().items()}
    result = theirs.load_state_dict(sd, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise SystemExit(f"state dicts differ: {result}")
    return theirs.eval(), mod


def runners(key, model, folder):
    """{name: generate(ids (1, n) int64, new_tokens) -> anything}."""
    out = {}
    if "tinygpt" in ARGS.runners:
        out["tinygpt"] = lambda ids, n: generate(model, ids, n, ids.shape[1] + n)
    if "book-kv-cache" in ARGS.runners:
        import torch
        from llms_from_scratch.kv_cache.generate import generate_text_simple
        theirs, _ = book_model(key, model)
        out["book-kv-cache"] = lambda ids, n: generate_text_simple(theirs, torch.from_numpy(ids), n)
    if "transformers" in ARGS.runners:
        import torch
        hf = hf_class(MODELS[key][3]).from_pretrained(folder, torch_dtype=torch.float32).eval()

        def hf_generate(ids, n):
            with torch.no_grad():
                return hf.generate(torch.from_numpy(ids), max_new_tokens=n, min_new_tokens=n,
                                   do_sample=False, pad_token_id=0)
        out["transformers"] = hf_generate
    return out


def hf_class(name):
    """A transformers model class, imported with bench/ off sys.path: transformers imports an
    optional package named `kernels`, which bench/kernels.py would shadow."""
    here = os.path.dirname(os.path.abspath(__file__))
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        import transformers
        return getattr(transformers, name)
    finally:
        sys.path[:] = saved


def seconds(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def measure(gen, prompt, long_prompt):
    """(decode tok/s, prefill tok/s, the 4 greedy tokens after `prompt`, background cores: other
    processes' CPU over the timed calls)."""
    out = gen(prompt, 4)                                       # warm-up: compile, page in
    tokens = tuple(np.asarray(out.data if isinstance(out, tg.Tensor) else out)[0, -4:].tolist())
    n = ARGS.new_tokens
    with LoadMeter() as meter:
        decode = n / (seconds(gen, prompt, n + 1) - seconds(gen, prompt, 1))
        prefill = ARGS.prefill_tokens / seconds(gen, long_prompt, 1)
    return decode, prefill, tokens, meter.other / meter.wall


def sum_bandwidth(threads, mbytes=256, repeats=7):
    """GB/s at which `threads` threads read a large float32 array, each summing its slice
    (np.add.reduce releases the GIL): bytes read / s, best of `repeats`. One core's read-only
    stream can beat a copy's (read + write) rate, so the bound takes the faster of the two."""
    from concurrent.futures import ThreadPoolExecutor
    n = mbytes * 2 ** 20 // 4
    a = np.ones(n, np.float32)
    bounds = [(i * n // threads, (i + 1) * n // threads) for i in range(threads)]
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(pool.map(lambda i: np.add.reduce(a[bounds[i][0]:bounds[i][1]]), range(threads)))
            best = min(best, time.perf_counter() - t0)
    return a.nbytes / best / 1e9


def bound_ms(model, bandwidth_gbs):
    """ms per decoded token if every byte it must read came at the copy bandwidth: the weights
    (one embedding row unless the head shares the table) + the mean KV cache over the decode."""
    cfg, seen, total = model.cfg, set(), 0
    for name, p in model.named_parameters():
        if id(p.data) not in seen:
            seen.add(id(p.data))
            only_a_row = name == "tok_emb.weight" and not model.weights_tied
            total += p.data[0].nbytes if only_a_row else p.data.nbytes
    head_dim = model.trf_blocks[0].att.head_dim
    positions = ARGS.prompt_tokens + ARGS.new_tokens / 2
    cache = 2 * cfg["n_layers"] * cfg["n_kv_groups"] * head_dim * positions * 4
    return 1e3 * (total + cache) / (bandwidth_gbs * 1e9)


def peak_rss(folder):
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(folder)], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": src})
    grew, peak, size = (int(v) for v in out.stdout.split())
    return grew, peak, size


def bench_model(key, bandwidth_gbs):
    model = build(key)
    rng = np.random.default_rng(ARGS.seed)  # the same prompts for every runner
    prompt = rng.integers(0, model.cfg["vocab_size"], (1, ARGS.prompt_tokens)).astype(np.int64)
    long_prompt = rng.integers(0, model.cfg["vocab_size"], (1, ARGS.prefill_tokens)).astype(np.int64)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained_hf(model, folder)
        results = {name: measure(gen, prompt, long_prompt)
                   for name, gen in runners(key, model, folder).items()}
        grew, peak, size = peak_rss(folder)
    refs = [results[r][0] for r in ("book-kv-cache", "transformers") if r in results]
    bound = bound_ms(model, bandwidth_gbs)
    if len({r[2] for r in results.values()}) > 1:
        print(f"WARNING: the runners' greedy tokens differ: { {k: r[2] for k, r in results.items()} }")
    for name, (decode, prefill, _, load) in results.items():
        vs = f"{decode / max(refs):.2f}" if refs and name == "tinygpt" else ""
        mark = " *" if busy(load, ARGS.threads) else ""
        rows.append([key, name, ARGS.threads, f"{decode:.2f}{mark}", vs, f"{1e3 / decode / bound:.2f}",
                     f"{prefill:.1f}{mark}", f"{load:.2f}"])
    print(markdown_table(["model", "runner", "threads", "decode tok/s", "vs faster ref", "x bound",
                          f"prefill {ARGS.prefill_tokens} tok/s", "background cores"], rows))
    if any(busy(r[3], ARGS.threads) for r in results.values()):
        print("*: taken while other processes used > 0.2 cores; rerun on a quiet machine.")
    print(f"\nload_pretrained + for_inference: peak RSS {peak / 1e6:.0f} MB, {grew / 1e6:.0f} MB "
          f"over the RSS "
          f"after imports, for {size / 1e6:.0f} MB of parameters: {grew / size:.2f}x (target <= "
          f"1.2x); bound {bound:.1f} ms/token at {bandwidth_gbs:.1f} GB/s\n", flush=True)


def main():
    require("torch", "llms_from_scratch", "transformers")
    import torch  # noqa: F401  (loaded before set_threads, so its pool is set too)
    from generate import memory_bandwidth
    if ARGS.smoke:
        ARGS.prompt_tokens, ARGS.new_tokens, ARGS.prefill_tokens = 4, 3, 16
    print(header("tinygpt modern-model generation bench (bench/generate_modern.py)"))
    print(f"thread pools {set_threads(ARGS.threads)}; float32, batch 1, greedy, random weights"
          + (" (SMOKE: tiny configs, figures meaningless)" if ARGS.smoke else ""))
    copy, read = memory_bandwidth(ARGS.threads), sum_bandwidth(ARGS.threads)
    print(f"memory bandwidth, {ARGS.threads} thread(s): copy {copy:.1f} GB/s (read + written), "
          f"read {read:.1f} GB/s (a sum); the bound takes the faster")
    bandwidth = max(copy, read)
    for key in (MODELS if ARGS.model == "all" else [ARGS.model]):
        bench_model(key, bandwidth)


if __name__ == "__main__":
    main()
