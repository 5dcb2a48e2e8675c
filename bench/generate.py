"""Generation speed: new tokens per second, GPT_CONFIG_124M (random weights), batch 1, greedy.

    python bench/generate.py                      # 200 new tokens after an 8-token prompt
    python bench/generate.py --threads 1          # pin BLAS/Numba to one thread
    python bench/generate.py --runners tinygpt-cached --new-tokens 50 --json runs/gen.json

Each runner is a factory registered with `@runner(name)`: given the config and the prompt it
builds what it needs (models are shared through `shared_model`) and returns a function
`generate(prompt_ids, new_tokens) -> ids (1, n + new_tokens)`. A PyTorch baseline is one more
factory (for example the book's `generate_text_simple` on tests/reference/torch_gpt.py's
GPTModel with the same weights): add it below and it shows up in the table and the JSON.

Every line records the background load (busy CPUs from /proc/stat minus this process's own CPU
time): 2-thread figures taken while something else runs are not trustworthy (PERF-NOTES.md).
"""
import argparse
import json
import os
import sys
import time


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--prompt-tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=None,
                   help="set OMP/OPENBLAS/MKL/NUMBA thread counts (default: library defaults)")
    p.add_argument("--runners", nargs="*", default=None,
                   help="which runners to time (default: all registered); choose from the table")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


ARGS = _parse_args() if __name__ == "__main__" else _parse_args([])
if ARGS.threads:  # before NumPy/Numba/torch are imported, or it has no effect
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tinygpt as tg  # noqa: E402
from tinygpt.model import GPT_CONFIG_124M, GPTModel, generate, generate_text_simple  # noqa: E402

RUNNERS = {}
_MODELS = {}


def runner(name):
    """Register a factory `(cfg, seed) -> generate(prompt_ids, new_tokens)` under `name`."""
    def register(factory):
        RUNNERS[name] = factory
        return factory
    return register


def shared_model(cfg, seed):
    """One tinygpt GPTModel per (config, seed), in eval mode, shared by all tinygpt runners."""
    key = (tuple(sorted(cfg.items())), seed)
    if key not in _MODELS:
        tg.manual_seed(seed)
        _MODELS[key] = GPTModel(cfg).eval()
    return _MODELS[key]


@runner("tinygpt-book-simple")
def _tinygpt_book(cfg, seed):
    """The book's section-4.7 loop: full logits for the whole window every step."""
    model = shared_model(cfg, seed)
    return lambda ids, n: generate_text_simple(model, ids, n, cfg["context_length"])


@runner("tinygpt-uncached")
def _tinygpt_uncached(cfg, seed):
    """generate(use_cache=False): the window is recomputed every step, last logits only."""
    model = shared_model(cfg, seed)
    return lambda ids, n: generate(model, ids, n, cfg["context_length"], use_cache=False)


@runner("tinygpt-cached")
def _tinygpt_cached(cfg, seed):
    """generate(use_cache=True): prompt once, then one token per step through the KV cache."""
    model = shared_model(cfg, seed)
    return lambda ids, n: generate(model, ids, n, cfg["context_length"], use_cache=True)


# --- measuring ----------------------------------------------------------------------------------
def _cpu_jiffies():
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _background_cpus(busy0, total0, own0, wall):
    """Average number of CPUs kept busy by other processes during the run."""
    busy1, total1 = _cpu_jiffies()
    ncpu = os.cpu_count() or 1
    if total1 == total0 or wall <= 0:
        return float("nan")
    busy_cpus = ncpu * (busy1 - busy0) / (total1 - total0)
    own = (time.process_time() - own0) / wall
    return max(0.0, busy_cpus - own)


def time_runner(name, generate_fn, prompt, new_tokens):
    generate_fn(prompt, 2)  # warm-up: Numba compiles, first-touch page faults
    busy0, total0 = _cpu_jiffies()
    own0, t0 = time.process_time(), time.perf_counter()
    out = generate_fn(prompt, new_tokens)
    wall = time.perf_counter() - t0
    out = np.asarray(out.data if isinstance(out, tg.Tensor) else out)
    produced = out.shape[1] - prompt.shape[1]
    return {"runner": name, "new_tokens": int(produced), "seconds": wall,
            "tokens_per_s": produced / wall, "ms_per_token": 1e3 * wall / max(produced, 1),
            "background_cpus": _background_cpus(busy0, total0, own0, wall),
            "tokens": out[0].tolist()}


def main():
    cfg = dict(GPT_CONFIG_124M)
    names = ARGS.runners or list(RUNNERS)
    unknown = [n for n in names if n not in RUNNERS]
    if unknown:
        sys.exit(f"unknown runner(s) {unknown}; registered: {list(RUNNERS)}")
    rng = np.random.default_rng(ARGS.seed)
    prompt = rng.integers(0, cfg["vocab_size"], size=(1, ARGS.prompt_tokens)).astype(np.int64)
    print(f"GPT_CONFIG_124M, random weights, batch 1, greedy, {ARGS.prompt_tokens}-token prompt, "
          f"{ARGS.new_tokens} new tokens, threads={ARGS.threads or 'default'}, "
          f"kernels={tg.kernels.BACKEND}, cpus={os.cpu_count()}")
    print(f"{'runner':24s} {'tok/s':>8s} {'ms/tok':>8s} {'seconds':>8s} {'bg cpus':>8s}")
    results = []
    for name in names:
        res = time_runner(name, RUNNERS[name](cfg, ARGS.seed), prompt, ARGS.new_tokens)
        results.append(res)
        print(f"{name:24s} {res['tokens_per_s']:8.2f} {res['ms_per_token']:8.1f} "
              f"{res['seconds']:8.2f} {res['background_cpus']:8.2f}", flush=True)
    token_sets = {tuple(r["tokens"]) for r in results}
    print("all runners produced the same tokens" if len(token_sets) == 1 else
          "WARNING: runners produced different tokens")
    by_name = {r["runner"]: r for r in results}
    if "tinygpt-cached" in by_name and "tinygpt-uncached" in by_name:
        print(f"KV cache speed-up: {by_name['tinygpt-cached']['tokens_per_s'] / by_name['tinygpt-uncached']['tokens_per_s']:.1f}x")
    if ARGS.json:
        os.makedirs(os.path.dirname(os.path.abspath(ARGS.json)), exist_ok=True)
        with open(ARGS.json, "w") as f:
            json.dump({"args": vars(ARGS), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
