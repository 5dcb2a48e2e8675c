"""Start-up bench: `import tinygpt` and the first training step of the bench-tiny model, cold and warm.

    python bench/startup.py                  # 1 and 2 threads, 2 cold + 2 warm runs each
    python bench/startup.py --quick          # one cold and one warm run per thread count
    python bench/startup.py --threads 2 --repeats 3 --json runs/startup.json

Each run is a fresh interpreter (`python -c ...`) with TINYGPT_KERNELS=numba and the thread
variables set. "cold": NUMBA_CACHE_DIR is a new empty directory, so every kernel the step uses
compiles; "warm": the same directory again, so the kernels load from Numba's disk cache.
Inside the child: `import tinygpt` (with NumPy and Numba), `tinygpt.tune_malloc()`, building the
`bench-tiny` model (bench/_frameworks.py: vocab 512, ctx 64, emb 64, 4 heads, 2 layers, batch 16),
the first forward + cross-entropy, the first backward, the first AdamW step, then a second whole step (for scale: the steady state).
"first step" = import + build + first forward + backward (the issue's target: cold < 20 s,
warm < 2 s); "+AdamW" adds the first optimizer step. "process" is the child's wall time seen from
here, interpreter start-up included; "CPU" its CPU seconds (compiling is single-threaded).
Background load: other processes' CPU (cores) during the child, /proc/stat minus the child's CPU.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (ROOT, SRC, LoadMeter, busy, fmt, header, markdown_table, median,  # noqa: E402
                     own_cpu_seconds, thread_env, write_json)

from _frameworks import CONFIGS  # noqa: E402

TINY, BATCH = CONFIGS["bench-tiny"]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
import tinygpt
t_import = time.perf_counter() - t0
tinygpt.tune_malloc()  # as the CLI and the examples do
import numpy as np
from tinygpt import GPTModel, manual_seed
from tinygpt.optim import AdamW
from tinygpt.train import calc_loss_batch
t = time.perf_counter()
manual_seed(123)
model = GPTModel({cfg!r})
opt = AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
rng = np.random.default_rng(0)
x = rng.integers(0, {vocab}, ({batch}, {ctx}))
y = rng.integers(0, {vocab}, ({batch}, {ctx}))
t_build = time.perf_counter() - t
t = time.perf_counter()
loss = calc_loss_batch(x, y, model)
t_fwd = time.perf_counter() - t
t = time.perf_counter()
loss.backward()
t_bwd = time.perf_counter() - t
t = time.perf_counter()
opt.step()
t_opt = time.perf_counter() - t
t = time.perf_counter()
opt.zero_grad()
loss2 = calc_loss_batch(x, y, model)
loss2.backward()
opt.step()
t_step2 = time.perf_counter() - t
print(json.dumps(dict(import_s=t_import, build_s=t_build, fwd_s=t_fwd, bwd_s=t_bwd, opt_s=t_opt,
                      step2_s=t_step2, loss=float(loss.item()), backend=tinygpt.kernels.BACKEND,
                      kernel_threads=tinygpt.kernels.num_threads())))
"""


def run_once(cache_dir, threads):
    env = thread_env(threads)
    env["NUMBA_CACHE_DIR"] = cache_dir
    env["TINYGPT_KERNELS"] = "numba"
    code = CHILD.format(root=SRC, cfg=TINY, vocab=TINY["vocab_size"], batch=BATCH, ctx=TINY["context_length"])
    cpu0 = own_cpu_seconds(resource.RUSAGE_CHILDREN)
    meter = LoadMeter(resource.RUSAGE_CHILDREN).start()
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True,
                         text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    cpu = own_cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0
    meter.stop()
    if res.returncode:
        sys.stderr.write(res.stderr)
        raise SystemExit("start-up child failed")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out.update(process_s=wall, cpu_s=cpu, load=meter.cores,
               first_step_s=out["import_s"] + out["build_s"] + out["fwd_s"] + out["bwd_s"])
    out["with_adamw_s"] = out["first_step_s"] + out["opt_s"]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--repeats", type=int, default=None, help="cold and warm runs per thread count (default 2)")
    p.add_argument("--quick", action="store_true", help="one cold and one warm run per thread count")
    p.add_argument("--show-busy", action="store_true", help="print figures taken under background load (marked *)")
    p.add_argument("--json", default=None, help="also write all runs to this JSON file")
    args = p.parse_args()
    repeats = args.repeats or (1 if args.quick else 2)

    print(header("tinygpt start-up bench (bench/startup.py)"))
    print(f"# bench-tiny model {TINY}, batch {BATCH}; medians of {repeats} run(s); a fresh NUMBA_CACHE_DIR per cold run")
    runs = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for _ in range(repeats):
            with tempfile.TemporaryDirectory(prefix="tinygpt-numba-cache-") as cache:
                runs.append({"threads": threads, "cache": "cold", **run_once(cache, threads)})
                runs.append({"threads": threads, "cache": "warm", **run_once(cache, threads)})
            cold, warm = runs[-2], runs[-1]
            print(f"#   {threads} thread(s): cold {cold['first_step_s']:.2f} s, warm {warm['first_step_s']:.2f} s "
                  f"(bg {cold['load']:.2f}/{warm['load']:.2f} cores)", flush=True)

    rows = []
    keys = ("import_s", "build_s", "fwd_s", "bwd_s", "first_step_s", "opt_s", "with_adamw_s", "step2_s",
            "process_s", "cpu_s")
    for threads in sorted({r["threads"] for r in runs}):
        for cache in ("cold", "warm"):
            sel = [r for r in runs if r["threads"] == threads and r["cache"] == cache]
            load = max(r["load"] for r in sel)
            hide = busy(load, threads) and not args.show_busy
            mark = "*" if busy(load, threads) and not hide else ""
            med = {k: median([r[k] for r in sel]) for k in keys}
            rows.append([cache, threads] + [fmt(med[k], ".3f" if k == "step2_s" else ".2f", hide) + mark
                                            for k in keys] + [f"{load:.2f}"])
    print("\n### Start-up: import tinygpt + first training step of the bench-tiny model (seconds)\n")
    print(markdown_table(["Numba cache", "threads", "import", "build", "1st fwd", "1st bwd", "first step",
                          "1st AdamW", "+AdamW", "2nd step", "process", "CPU", "bg load"], rows))
    print("\n'first step' = import + build + first forward + first backward (targets: cold < 20 s, warm < 2 s).")
    if any(busy(r["load"], r["threads"]) for r in runs):
        print("'busy' / *: taken while other processes used > 0.2 cores; rerun on a quiet machine.")
    if args.json:
        write_json(args.json, {"args": vars(args), "runs": runs})


if __name__ == "__main__":
    main()
