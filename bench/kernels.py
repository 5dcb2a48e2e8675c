"""Kernel bench: Numba kernel vs NumPy reference vs PyTorch, per GPT-2 shape, same thread count.

    python bench/kernels.py [--quick] [--threads 1,2] [--dtype float32] [--only softmax,...]

Each thread count runs in its own subprocess with OPENBLAS_NUM_THREADS = NUMBA_NUM_THREADS = n
(the kernels' thread count) and torch.set_num_threads(n), so all three sides get the same cores.
Times are medians of repeats run in alternating blocks (ms). Ratios > 1 mean the Numba kernel is faster ("np/nb"
vs NumPy, "pt/nb" vs PyTorch). For matmul, "numba" is our GEMM (``gemm_numba``) whatever the rule,
or for few-row products against a weight (decoding, "decode" rows: M = 1 and batched M = 4, 16)
our GEMV (``gemv_numba``, split over the pool on several threads); "rule" is the path
``kernels.matmul`` picks (the rule must never pick a slower path).

Also reported: cold / warm compile (import + first call of every kernel, float32 then float64) in a
subprocess with a fresh NUMBA_CACHE_DIR, wall and CPU seconds; whether OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE were set (unset them for a reference run); and the background load (CPU used by
other processes during each row, from /proc/stat minus our own CPU time). Trust no 2-thread figure
taken with load > ~0.2 cores.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import IDLE_S, cpu_busy_seconds, own_cpu_seconds, warm  # noqa: E402
from _kernel_cases import cases  # noqa: E402


# ---------------------------------------------------------------- measurement helpers

def median_ms(fns, repeats, budget_s, rounds=3):
    """Median ms of each function. The repeats run in `rounds` blocks per function (nb x k, np x k,
    pt x k, nb x k, ...): a load change hits all three alike. Each block starts after an IDLE_S pause,
    so one library's spinning threads (OpenBLAS spins ~0.1 s after a call) do not bill the next,
    then WARM_S of untimed calls, so the cores are back from idle (see _common.py).
    """
    times = [[] for _ in fns]
    start = time.perf_counter()
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        for fn, ts in zip(fns, times):
            time.sleep(IDLE_S)
            warm(fn)  # untimed: compile, page in, cores back from the pause
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
                if len(ts) >= 3 and time.perf_counter() - start > budget_s:
                    break
    return [1e3 * sorted(ts)[len(ts) // 2] for ts in times]


def child(args):
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    import tinygpt
    import tinygpt.kernels as K
    tinygpt.tune_malloc()  # as the CLI and the examples do
    repeats, budget = (9, 2.0) if args.quick else (21, 8.0)
    rows = []
    busy0, own0, wall0 = cpu_busy_seconds(), own_cpu_seconds(), time.perf_counter()
    for kernel, shape, f_nb, f_np, f_pt, rule in cases(args.quick, np, torch, K, args.dtype):
        if args.only and not any(o in kernel for o in args.only.split(",")):
            continue
        b0, o0, w0 = cpu_busy_seconds(), own_cpu_seconds(), time.perf_counter()
        t_nb, t_np, t_pt = median_ms((f_nb, f_np, f_pt), repeats, budget)
        wall = time.perf_counter() - w0
        other = max(0.0, (cpu_busy_seconds() - b0) - (own_cpu_seconds() - o0)) / wall
        rows.append({"kernel": kernel, "shape": shape, "nb": t_nb, "np": t_np, "pt": t_pt, "rule": rule,
                     "load": other})
    wall = time.perf_counter() - wall0
    load = max(0.0, (cpu_busy_seconds() - busy0) - (own_cpu_seconds() - own0)) / wall
    print(json.dumps({"rows": rows, "load": load, "kernel_threads": K.num_threads(),
                      "torch_threads": torch.get_num_threads()}))


COMPILE_SNIPPET = r"""
import time, sys, resource
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
import numpy as np
import tinygpt.kernels as K
t_import = time.perf_counter() - t0
from tinygpt.kernels import warmup
t1 = time.perf_counter()
warmup(np.float32)
t_f32 = time.perf_counter() - t1
t2 = time.perf_counter()
warmup(np.float64)
t_f64 = time.perf_counter() - t2
print(t_import, t_f32, t_f64, cpu())
"""


def compile_times():
    """(import, first calls float32, first calls float64, total CPU) seconds: cold cache, then warm."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, TINYGPT_KERNELS="numba")
        for name in ("cold", "warm"):  # cold: empty NUMBA_CACHE_DIR; warm: the same dir again
            res = subprocess.run([sys.executable, "-c", COMPILE_SNIPPET.format(root=os.path.join(ROOT, "src"))], env=env,
                                 capture_output=True, text=True, check=True)
            out[name] = [float(v) for v in res.stdout.split()]
    return out


def run_child(threads, args):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TINYGPT_KERNELS="numba")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--threads", str(threads),
           "--dtype", args.dtype] + (["--quick"] if args.quick else []) + (["--only", args.only] if args.only else [])
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"bench child ({threads} threads) failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--only", default="", help="comma-separated kernel name filter")
    p.add_argument("--no-compile", action="store_true", help="skip the cold/warm compile measurement")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.threads = int(args.threads)
        return child(args)

    print(f"# tinygpt kernel bench  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  "
          f"{platform.processor() or platform.machine()}  cpus={os.cpu_count()}  dtype={args.dtype}")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        print(f"# {var}: {'SET to ' + repr(os.environ[var]) if var in os.environ else 'unset'}")
    with open("/proc/loadavg") as f:
        print(f"# loadavg at start: {' '.join(f.read().split()[:3])}")
    if not args.no_compile:
        ct = compile_times()
        for name in ("cold", "warm"):
            imp, f32, f64, cpu = ct[name]
            print(f"# compile {name} cache: import {imp:.2f} s + first call of every kernel: float32 {f32:.2f} s, "
                  f"then float64 {f64:.2f} s; wall {imp + f32 + f64:.2f} s, CPU {cpu:.2f} s (process total)")
    results = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        res = results[threads] = run_child(threads, args)
        print(f"\n## {threads} thread(s): tinygpt kernels {res['kernel_threads']}, torch "
              f"{res['torch_threads']}, OpenBLAS {threads}; background load {res['load']:.2f} cores")
        print(f"| {'kernel':20s} | {'shape':44s} | {'numba ms':>9s} | {'numpy ms':>9s} | {'torch ms':>9s} "
              f"| {'np/nb':>6s} | {'pt/nb':>6s} | {'rule':>5s} | {'load':>4s} |")
        print("|" + "|".join("-" * w for w in (22, 46, 11, 11, 11, 8, 8, 7, 6)) + "|")
        for r in res["rows"]:
            print(f"| {r['kernel']:20s} | {r['shape'][:44]:44s} | {r['nb']:9.3f} | {r['np']:9.3f} | "
                  f"{r['pt']:9.3f} | {r['np'] / r['nb']:6.2f} | {r['pt'] / r['nb']:6.2f} | "
                  f"{r['rule'] or '':>5s} | {r['load']:4.2f} |")
    print_summary(results)


def print_summary(results):
    """All thread counts side by side (the README's table): what tinygpt runs (for matmul the path
    the rule picks: np.matmul on a "blas" row) against PyTorch; then the check that the matmul rule
    never takes a path slower than np.matmul."""
    counts = sorted(results)
    print(f"\n## Summary: ms, tinygpt's path / PyTorch (torch time / ours), threads "
          f"{', '.join(map(str, counts))}\n")
    heads = ["kernel", "shape"] + [f"{t} thread{'s' if t > 1 else ''}" for t in counts] + ["matmul path"]
    print("| " + " | ".join(heads) + " |")
    print("|" + "|".join(["---", "---"] + ["--:"] * len(counts) + ["---"]) + "|")
    for i, r in enumerate(results[counts[0]]["rows"]):
        cells = []
        for t in counts:
            q = results[t]["rows"][i]
            ours = q["np"] if q["rule"] == "blas" else q["nb"]
            cells.append(f"{ours:.3g} / {q['pt']:.3g} ({q['pt'] / ours:.2f}x)")
        rules = list(dict.fromkeys(results[t]["rows"][i]["rule"] or "" for t in counts))  # per thread count
        print(f"| {r['kernel']} | {r['shape']} | " + " | ".join(cells) + f" | {' / '.join(rules)} |")
    slower = [(t, q) for t in counts for q in results[t]["rows"]
              if q["rule"] in ("numba", "gemv") and q["nb"] > 1.05 * q["np"]]
    print("\nmatmul rule: " + ("never slower than np.matmul (> 5%) on these shapes" if not slower else
                              "SLOWER than np.matmul on " + "; ".join(
                                  f"{q['shape']} at {t} thread(s): {q['nb']:.3f} vs {q['np']:.3f} ms"
                                  for t, q in slower)))


if __name__ == "__main__":
    main()
