"""Generation speed: new tokens per second, GPT_CONFIG_124M (random weights), batch 1, greedy.
(Qwen3-0.6B and Llama-3.2-1B against the book's PyTorch models and transformers, with prefill
and load_pretrained's peak memory: bench/generate_modern.py.)

    python bench/generate.py                      # 200 new tokens after an 8-token prompt; 1 and 2 threads
    python bench/generate.py --threads 1          # one thread count (runs in this process)
    python bench/generate.py --runners tinygpt-cached torch-kv-cache --new-tokens 50 --json runs/gen.json

Runners (all on the same weights: the PyTorch model is the book's `llms_from_scratch.ch04.GPTModel`
loaded with tinygpt's state dict; the tinygpt model is readied by `tinygpt.model.for_inference`):
  tinygpt-book-simple  tinygpt's section-4.7 loop (full logits for the whole window every step)
  tinygpt-uncached     generate(use_cache=False): window recomputed every step, last logits only
  tinygpt-cached       generate(use_cache=True): prompt once, then one token per step (KV cache)
  torch-book-simple    the book's own `ch04.generate_text_simple` on the PyTorch model
  torch-kv-cache       a PyTorch KV-cache decoder of the same model (the book package's
                       `kv_cache.gpt2` fails on its first cached step, bench/README.md): the
                       ch04 modules (its LayerNorm, GELU, Linear layers) with a preallocated
                       cache per layer and the causal mask only on the prompt step
The runners live in bench/_generate_runners.py, each a factory registered with `@runner(name)`.

Each runner gets one untimed 2-token call (compile, page-in), then one timed call.
Memory bandwidth: a 256 MB float32 array copied in `threads` slices by `threads` threads, best of
7, counted STREAM-style (bytes read + bytes written) / s. Decoding one token reads every weight
once (all parameters but the two embedding tables, of which one row each), so
bound = weight bytes / bandwidth is the floor on ms per token; "x bound" = ms/token / bound.
A copy is not the rate a matrix-vector product reads at, so the script also times np.matmul
(OpenBLAS's sgemv, the child's threads) on a 256 MB (N, 768) float32 weight matrix, best of 7:
"x read bound" = ms/token / (weight bytes / that rate), how close a decoder gets to streaming its
weights as fast as OpenBLAS streams one large matrix. Both rates are measured before and after the
runners and the bound takes the faster, as a machine's bandwidth can drift (bench/README.md).

With several thread counts (default 1,2) each count runs in a child process with OMP/OPENBLAS/
MKL/NUMBA_NUM_THREADS set before NumPy/torch load; the parent prints one combined table.
Every line records the background load (other processes' CPU, cores: /proc/stat minus this
process's CPU): a multi-thread figure taken with more than 0.2 cores of it is not reported;
--show-busy prints it anyway, marked *.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (IDLE_S, LoadMeter, busy, fmt, header, markdown_table, require, set_threads,  # noqa: E402
                     thread_env, write_json)


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--prompt-tokens", type=int, default=8)
    p.add_argument("--threads", default="1,2",
                   help="comma-separated thread counts (default 1,2); one count runs in-process")
    p.add_argument("--runners", nargs="*", default=None,
                   help="which runners to time (default: all registered); choose from the table")
    p.add_argument("--quick", action="store_true", help="50 new tokens, skip the *-book-simple runners")
    p.add_argument("--show-busy", action="store_true", help="print figures taken under background load (marked *)")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


ARGS = _parse_args() if __name__ == "__main__" else _parse_args([])
SINGLE = "," not in ARGS.threads
if SINGLE:  # before NumPy/Numba/torch are imported, or it has no effect
    os.environ.update({k: v for k, v in thread_env(int(ARGS.threads)).items() if k.endswith("NUM_THREADS")})

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tinygpt as tg  # noqa: E402
from tinygpt.model import GPT_CONFIG_124M  # noqa: E402
from _generate_runners import RUNNERS, shared_model  # noqa: E402

tg.tune_malloc()  # as the CLI and the examples do (process-wide: tinygpt/core/malloc.py)

# --- measuring ----------------------------------------------------------------------------------
def memory_bandwidth(threads, mbytes=256, repeats=7):
    """GB/s of a large float32 copy in `threads` slices by `threads` threads (NumPy releases the GIL
    in the copy loop), STREAM convention: (bytes read + bytes written) / s; best of `repeats`."""
    from concurrent.futures import ThreadPoolExecutor
    n = mbytes * 2 ** 20 // 4
    src = np.ones(n, np.float32)
    dst = np.zeros(n, np.float32)
    dst[:] = 0.0  # first touch outside the timing
    bounds = [(i * n // threads, (i + 1) * n // threads) for i in range(threads)]

    def part(i):
        lo, hi = bounds[i]
        np.copyto(dst[lo:hi], src[lo:hi])

    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(pool.map(part, range(threads)))
            best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def _bandwidths(threads):
    """(copy GB/s, sgemv read GB/s, background cores while measuring)."""
    meter = LoadMeter().start()
    copy, read = memory_bandwidth(threads), read_bandwidth()
    meter.stop()
    return copy, read, meter.cores


def read_bandwidth(mbytes=256, repeats=7, emb=768):
    """GB/s at which np.matmul (OpenBLAS sgemv, this process's BLAS threads) reads a `mbytes`
    (N, emb) float32 matrix times a vector: weight bytes / s, best of `repeats`."""
    w = np.ones((mbytes * 2 ** 20 // 4 // emb, emb), np.float32)
    x = np.ones(emb, np.float32)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        w @ x
        best = min(best, time.perf_counter() - t0)
    return w.nbytes / best / 1e9


def decode_weight_bytes(model):
    """Bytes one decoding step must read: every parameter except the embedding tables (one row of
    each is read), each shared Parameter once."""
    total, seen = 0, set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        data = p.data
        total += data.nbytes if name not in ("tok_emb.weight", "pos_emb.weight") else data[0].nbytes
    return total


def time_runner(name, generate_fn, prompt, new_tokens):
    generate_fn(prompt, 2)  # warm-up: Numba compiles, first-touch page faults
    time.sleep(IDLE_S)      # the previous runner's spinning BLAS threads go idle
    meter = LoadMeter().start()
    t0 = time.perf_counter()
    out = generate_fn(prompt, new_tokens)
    wall = time.perf_counter() - t0
    meter.stop()
    out = np.asarray(out.data if isinstance(out, tg.Tensor) else out)
    produced = out.shape[1] - prompt.shape[1]
    return {"runner": name, "new_tokens": int(produced), "seconds": wall,
            "tokens_per_s": produced / wall, "ms_per_token": 1e3 * wall / max(produced, 1),
            "background_cpus": meter.cores, "tokens": out[0].tolist()}


BASELINE = {"tinygpt-cached": "torch-kv-cache", "tinygpt-uncached": "torch-book-simple",
            "tinygpt-book-simple": "torch-book-simple"}


def table(results, show_busy):
    """One markdown table over every thread count's results."""
    rows = []
    for res in results:
        thr, bound_ms, read_ms = res["threads"], res["bound_ms"], res["read_bound_ms"]
        by_name = {r["runner"]: r for r in res["results"]}
        for r in res["results"]:
            hide = busy(r["background_cpus"], thr) and not show_busy
            mark = "*" if busy(r["background_cpus"], thr) and not hide else ""
            base = by_name.get(BASELINE.get(r["runner"]))
            vs = r["tokens_per_s"] / base["tokens_per_s"] if base else None
            base_busy = base is not None and busy(base["background_cpus"], thr) and not show_busy
            rows.append([r["runner"], thr, fmt(r["tokens_per_s"], ".2f", hide) + mark,
                         fmt(r["ms_per_token"], ".1f", hide) + mark,
                         fmt(r["ms_per_token"] / bound_ms, ".2f", hide) + mark,
                         fmt(r["ms_per_token"] / read_ms, ".2f", hide) + mark,
                         (fmt(vs, ".2f", hide or base_busy) + mark) if base else "",
                         f"{r['background_cpus']:.2f}"])
    return markdown_table(["runner", "threads", "tok/s", "ms/token", "x bound", "x read bound", "vs torch",
                           "bg load"], rows)


def run_single(threads):
    """Time every runner in this process; returns the result dict (and prints a line per runner)."""
    cfg = dict(GPT_CONFIG_124M)
    names = ARGS.runners or [n for n in RUNNERS if not (ARGS.quick and n.endswith("book-simple"))]
    unknown = [n for n in names if n not in RUNNERS]
    if unknown:
        sys.exit(f"unknown runner(s) {unknown}; registered: {list(RUNNERS)}")
    new_tokens = 50 if ARGS.quick and ARGS.new_tokens == 200 else ARGS.new_tokens
    rng = np.random.default_rng(ARGS.seed)
    prompt = rng.integers(0, cfg["vocab_size"], size=(1, ARGS.prompt_tokens)).astype(np.int64)
    if any(n.startswith("torch") for n in names):
        import torch  # noqa: F401  (so set_threads sets its pool too)
    pools = set_threads(threads)
    before = _bandwidths(threads)
    weight_bytes = decode_weight_bytes(shared_model(cfg, ARGS.seed))
    print(f"## {threads} thread(s): GPT_CONFIG_124M, random weights, batch 1, greedy, {ARGS.prompt_tokens}-token "
          f"prompt, {new_tokens} new tokens, kernels={tg.kernels.BACKEND}; thread pools {pools}")
    print(f"{'runner':24s} {'tok/s':>8s} {'ms/tok':>8s} {'seconds':>8s} {'bg cpus':>8s}")
    results = []
    for name in names:
        res = time_runner(name, RUNNERS[name](cfg, ARGS.seed), prompt, new_tokens)
        results.append(res)
        print(f"{name:24s} {res['tokens_per_s']:8.2f} {res['ms_per_token']:8.1f} "
              f"{res['seconds']:8.2f} {res['background_cpus']:8.2f}", flush=True)
    after = _bandwidths(threads)
    # bandwidth can drift during a run (bench/README.md): measured before and after the runners,
    # the bound takes the faster of the two
    bw, read_bw = max(before[0], after[0]), max(before[1], after[1])
    bound_ms = 1e3 * weight_bytes / (bw * 1e9)
    read_ms = 1e3 * weight_bytes / (read_bw * 1e9)
    print(f"## memory bandwidth {bw:.1f} GB/s (copy, {threads} thread(s); before/after the runners "
          f"{before[0]:.1f}/{after[0]:.1f}, bg {before[2]:.2f}/{after[2]:.2f} cores); decode reads "
          f"{weight_bytes / 1e6:.0f} MB of weights per token -> bound {bound_ms:.1f} ms/token "
          f"({1e3 / bound_ms:.1f} tok/s)")
    print(f"## read bandwidth {read_bw:.1f} GB/s (np.matmul sgemv on a 256 MB matrix; before/after "
          f"{before[1]:.1f}/{after[1]:.1f}) -> read bound {read_ms:.1f} ms/token")
    token_sets = {tuple(r["tokens"]) for r in results}
    print("all runners produced the same tokens" if len(token_sets) == 1 else
          "WARNING: runners produced different tokens: " + ", ".join(
              f"{r['runner']} {r['tokens'][ARGS.prompt_tokens:ARGS.prompt_tokens + 6]}" for r in results))
    by_name = {r["runner"]: r for r in results}
    if "tinygpt-cached" in by_name and "tinygpt-uncached" in by_name:
        print(f"KV cache speed-up: {by_name['tinygpt-cached']['tokens_per_s'] / by_name['tinygpt-uncached']['tokens_per_s']:.1f}x")
    return {"threads": threads, "bandwidth_gbs": bw, "bandwidth_bg_cpus": max(before[2], after[2]),
            "bandwidth_before_after_gbs": [before[0], after[0]],
            "read_bandwidth_before_after_gbs": [before[1], after[1]],
            "read_bandwidth_gbs": read_bw, "read_bound_ms": read_ms,
            "weight_bytes": weight_bytes, "bound_ms": bound_ms, "new_tokens": new_tokens, "results": results}


def main():
    require("torch", "llms_from_scratch")
    if SINGLE:
        if not ARGS.child:
            print(header("tinygpt generation bench (bench/generate.py)"))
        res = run_single(int(ARGS.threads))
        if not ARGS.child:
            print()
            print(table([res], ARGS.show_busy))
        if ARGS.json:
            write_json(ARGS.json, {"args": vars(ARGS), "runs": [res]})
        return
    print(header("tinygpt generation bench (bench/generate.py)"))
    runs = []
    for threads in [int(t) for t in ARGS.threads.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "gen.json")
            cmd = [sys.executable, os.path.abspath(__file__)] + _child_argv(sys.argv[1:], threads, out)
            res = subprocess.run(cmd, check=False, env=thread_env(threads))
            if res.returncode:
                raise SystemExit(f"generate child ({threads} threads) failed")
            with open(out) as f:
                runs += json.load(f)["runs"]
        print()
    print(f"### Generation, GPT_CONFIG_124M, batch 1, greedy, {ARGS.prompt_tokens}-token prompt\n")
    print(table(runs, ARGS.show_busy))
    print("\nx bound = ms/token / (decode weight bytes / copy bandwidth); x read bound: the same over "
          "the sgemv read rate; vs torch: tinygpt-cached against "
          "torch-kv-cache, the uncached tinygpt runners against torch-book-simple.")
    if any(busy(r["background_cpus"], run["threads"]) for run in runs for r in run["results"]):
        print("'busy' / *: taken while other processes used > 0.2 cores; rerun on a quiet machine.")
    if ARGS.json:
        write_json(ARGS.json, {"args": vars(ARGS), "runs": runs})


def _child_argv(argv, threads, json_path):
    """The parent's arguments with --threads and --json replaced for one child."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--threads", "--json"):
            skip = True
            continue
        if a.startswith(("--threads=", "--json=")):
            continue
        out.append(a)
    return out + ["--threads", str(threads), "--json", json_path, "--child"]


if __name__ == "__main__":
    main()
