"""Training-step bench: tinygpt against the book's PyTorch GPTModel, same architecture, same weights.

    python bench/train_step.py                         # book-124M, small, bench-tiny; 1 and 2 threads
    python bench/train_step.py --quick                 # small and bench-tiny, 3 samples, no memory runs
    python bench/train_step.py --configs book-124M --threads 2 --steps 7 --json runs/train.json
    python bench/train_step.py --configs book-124M --profile 3    # cProfile 3 tinygpt steps
    python bench/train_step.py --configs book-124M --twins-vs-book  # for_training's twins vs book classes

tinygpt's model is `for_training(GPTModel(cfg))`, as the CLI and examples/ch05_pretrain.py train
it (the fast attention twins: blocked causal attention forward and backward); `--book-classes`
times GPTModel's own classes instead. One training step = zero_grad, forward, cross-entropy, backward, AdamW step (lr 4e-4, weight decay
0.1, as in the book's chapter 5), on a fixed random batch. The PyTorch side is
`llms_from_scratch.ch04.GPTModel` (the book's own package) loaded with tinygpt's state dict, and
`torch.optim.AdamW` with its defaults, as the book uses it.

Each (config, thread count) runs in its own child process with OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS
= n, torch.set_num_threads(n), tinygpt.kernels.set_num_threads(n) and threadpoolctl limits = n, so
both frameworks get the same cores. Inside it the two frameworks alternate (tinygpt then torch,
then torch then tinygpt, ...): each timed sample is a block of k consecutive steps (k chosen so a
sample lasts >= ~0.25 s; k = 1 for the big configs) after a short pause that lets the other
library's spinning threads go idle. Reported: median over the samples (>= 5 unless --quick) after
--warmup untimed steps. Then the same for forward-only evaluation (eval mode, no_grad, forward +
cross-entropy: what `calc_loss_loader` runs).

Peak resident memory: a separate child per framework and config (only that framework imported)
builds the model and runs 2 training steps; `ru_maxrss` of that process.

MFU: model FLOPs per token / fp32 peak of the cores used. FLOPs per token (PaLM appendix B):
training 6 N + 12 L T d, evaluation 2 N + 4 L T d, with N the parameters that take part in a matmul
(12 L d^2 + d V: blocks and the output head, not the embeddings), T the context length (the full
T x T score matrices are computed, as both frameworks do), L layers, d emb_dim. The peak is
threads x GHz x FMA units x fp32 lanes x 2, GHz from /proc/cpuinfo (override with --ghz), FMA
units 1 on AMD Zen 4 and 2 otherwise (override with --fma-units). A VM's 'cpu MHz' is often the
base clock, and cores boost above it, so each child also measures the ceiling that matters in
practice: np.matmul (OpenBLAS) on a (512, 768) @ (768, 3072) float32 product with the same threads
('GEMM GFLOP/s'); 'of GEMM %' is model FLOP/s over it.

Background load (other processes' CPU in cores, /proc/stat minus this process) is measured over
each framework's timed samples; a multi-thread row whose load exceeds 0.2 cores prints 'busy'
instead of numbers (--show-busy prints them anyway, marked with *). The JSON keeps everything.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (IDLE_S, ROOT, LoadMeter, busy, cpu_info, fmt, fp32_peak, gemm_gflops, header,  # noqa: E402
                     markdown_table, median, openblas_threads_sleep, require, set_threads, thread_env, warm, write_json)
openblas_threads_sleep()   # before NumPy loads, as examples/ch05_pretrain.py does (see _common)
from _frameworks import (CONFIGS, LR, WEIGHT_DECAY, batch, make_tinygpt, make_torch, tinygpt_fns,  # noqa: E402
                         torch_fns)

SAMPLE_S = 0.25          # a timed sample lasts at least this long (k steps in a row)


def flops_per_token(cfg, train=True):
    L, d, V, T = cfg["n_layers"], cfg["emb_dim"], cfg["vocab_size"], cfg["context_length"]
    n_matmul = 12 * L * d * d + d * V
    return (6 * n_matmul + 12 * L * T * d) if train else (2 * n_matmul + 4 * L * T * d)


# ---------------------------------------------------------------- timing (child)

def make_tinygpt_run(cfg, seed, args):
    """The tinygpt model and AdamW as the CLI and examples/ch05_pretrain.py train it:
    `for_training(GPTModel(cfg))` (the fast attention twins); with --book-classes the book's
    classes as GPTModel builds them."""
    from tinygpt.model import for_training
    from tinygpt.optim import AdamW
    model, opt = make_tinygpt(cfg, seed)
    if args.book_classes:
        return model, opt
    model = for_training(model)  # the same Parameters, some now views of packed arrays
    return model, AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)


def calibrate(fn, warmup):
    """Run `fn` `warmup` times untimed (compile, page-in, optimizer state); return the steps per
    sample so that a sample lasts >= SAMPLE_S."""
    for _ in range(max(1, warmup)):
        fn()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return max(1, math.ceil(SAMPLE_S / max(dt, 1e-6)))


def alternate(fns, ks, samples):
    """Alternate the frameworks' samples (A B, B A, A B, ...). Returns per framework: per-step
    seconds of each sample, the per-step phase times, and the LoadMeter over its samples."""
    names = list(fns)
    out = {n: {"step_s": [], "phases": [], "meter": LoadMeter()} for n in names}
    for s in range(samples):
        for name in (names if s % 2 == 0 else names[::-1]):
            res, fn, k = out[name], fns[name], ks[name]
            time.sleep(IDLE_S)
            warm(fn)  # untimed steps for WARM_S: the cores back from the pause
            res["meter"].start()
            t0 = time.perf_counter()
            for _ in range(k):
                ph = fn()
                if isinstance(ph, tuple):
                    res["phases"].append(ph)
            wall = time.perf_counter() - t0
            res["meter"].stop()
            res["step_s"].append(wall / k)
    return out


def summarize(res, tokens_per_step):
    ph = res["phases"]
    step = median(res["step_s"])
    return {"tokens_per_s": tokens_per_step / step, "step_ms": 1e3 * step,
            "step_ms_all": [1e3 * s for s in res["step_s"]],
            "fwd_ms": 1e3 * median([p[0] for p in ph]) if ph else None,
            "bwd_ms": 1e3 * median([p[1] for p in ph]) if ph else None,
            "opt_ms": 1e3 * median([p[2] for p in ph]) if ph else None,
            "samples": len(res["step_s"]), "load": res["meter"].cores}


def child_time(args):
    import numpy as np
    import torch  # noqa: F401  (so set_threads sees it)

    import tinygpt.kernels  # noqa: F401
    threads = set_threads(args.threads)
    cfg, bs = CONFIGS[args.config]
    x, y = batch(cfg, bs, args.seed)
    tok = bs * cfg["context_length"]
    tmodel, topt = make_tinygpt_run(cfg, args.seed, args)
    sd = {k: np.asarray(v) for k, v in tmodel.state_dict().items()}
    pmodel, popt = make_torch(cfg, args.seed, sd)
    t_step, t_eval = tinygpt_fns(tmodel, topt, x, y)
    p_step, p_eval = torch_fns(pmodel, popt, x, y)

    # same weights, same loss (eval mode: no dropout), before any step
    tmodel.eval()
    pmodel.eval()
    loss0 = {"tinygpt": t_eval(), "torch": p_eval()}
    tmodel.train()
    pmodel.train()

    out = {"config": args.config, "threads": args.threads, "thread_pools": threads, "tokens_per_step": tok,
           "loss0": loss0, "gemm_gflops": gemm_gflops()}
    ks = {"tinygpt": calibrate(t_step, args.warmup), "torch": calibrate(p_step, args.warmup)}
    res = alternate({"tinygpt": t_step, "torch": p_step}, ks, args.steps)
    out["train"] = {n: {**summarize(r, tok), "k": ks[n]} for n, r in res.items()}

    tmodel.eval()
    pmodel.eval()
    ks = {"tinygpt": calibrate(t_eval, args.warmup), "torch": calibrate(p_eval, args.warmup)}
    res = alternate({"tinygpt": t_eval, "torch": p_eval}, ks, args.steps)
    out["eval"] = {n: {**summarize(r, tok), "k": ks[n]} for n, r in res.items()}
    print(json.dumps(out))


def child_pair(args):
    """--twins-vs-book: the same GPTModel twice, one readied by for_training, steps alternated."""
    import tinygpt.kernels  # noqa: F401
    set_threads(args.threads)
    cfg, bs = CONFIGS[args.config]
    x, y = batch(cfg, bs, args.seed)
    book, twin = make_tinygpt(cfg, args.seed), make_tinygpt_run(cfg, args.seed, args)
    fns = {"book classes": tinygpt_fns(*book, x, y)[0], "twins": tinygpt_fns(*twin, x, y)[0]}
    ks = {n: calibrate(f, args.warmup) for n, f in fns.items()}
    res = alternate(fns, ks, args.steps)
    out = {n: summarize(r, bs * cfg["context_length"]) for n, r in res.items()}
    ratios = [t / b for t, b in zip(out["twins"]["step_ms_all"], out["book classes"]["step_ms_all"])]
    print(f"# {args.config}, {args.threads} thread(s), {args.steps} samples each, alternated")
    for n, r in out.items():
        print(f"{n:>12}: step {r['step_ms']:.0f} ms (fwd/bwd/opt {r['fwd_ms']:.0f}/{r['bwd_ms']:.0f}/"
              f"{r['opt_ms']:.0f}), {r['tokens_per_s']:.1f} tok/s, background {r['load']:.2f} cores")
    print(f"twins / book classes, median of paired samples: {median(ratios):.3f}")


def child_mem(args):
    """Peak RSS of a process that only imports one framework and trains 2 steps."""
    import resource

    import numpy as np
    cfg, bs = CONFIGS[args.config]
    x, y = batch(cfg, bs, args.seed)
    if args.framework == "tinygpt":
        import tinygpt.kernels  # noqa: F401
        set_threads(args.threads)
        model, opt = make_tinygpt_run(cfg, args.seed, args)
        step, _ = tinygpt_fns(model, opt, x, y)
    else:
        import torch  # noqa: F401
        set_threads(args.threads)
        model, opt = make_torch(cfg, args.seed)
        step, _ = torch_fns(model, opt, x, y)
    assert "torch" not in sys.modules or args.framework == "torch"
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(2):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"framework": args.framework, "config": args.config, "peak_rss_mb": peak,
                      "rss_after_build_mb": rss_model, "np": np.__version__}))


def child_profile(args):
    """cProfile `--profile` tinygpt training steps (after warm-up); print the top functions."""
    import cProfile
    import pstats

    import tinygpt.kernels  # noqa: F401
    set_threads(args.threads)
    cfg, bs = CONFIGS[args.config]
    x, y = batch(cfg, bs, args.seed)
    model, opt = make_tinygpt_run(cfg, args.seed, args)
    step, _ = tinygpt_fns(model, opt, x, y)
    for _ in range(max(1, args.warmup)):
        step()
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    phases = [step() for _ in range(args.profile)]
    prof.disable()
    wall = time.perf_counter() - t0
    print(f"# cProfile of {args.profile} tinygpt training step(s), {args.config}, {args.threads} thread(s): "
          f"{1e3 * wall / args.profile:.0f} ms/step under the profiler (fwd/bwd/opt "
          + "/".join(f"{1e3 * sum(p[i] for p in phases) / len(phases):.0f}" for i in range(3)) + " ms)")
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(args.profile_top)
    stats.sort_stats("cumulative").print_stats(args.profile_top)


# ---------------------------------------------------------------- parent

def run_child(mode, args, config, threads, framework=None):
    cmd = [sys.executable, os.path.abspath(__file__), mode, "--config", config, "--threads", str(threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--seed", str(args.seed)]
    if framework:
        cmd += ["--framework", framework]
    if args.book_classes:
        cmd += ["--book-classes"]
    if mode in ("--child-profile", "--child-pair"):
        cmd += ["--profile", str(args.profile), "--profile-top", str(args.profile_top)]
        subprocess.run(cmd, env=thread_env(threads), check=True)
        return None
    res = subprocess.run(cmd, check=False, env=thread_env(threads), capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"child {mode} {config} {threads} thread(s) {framework or ''} failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=None, help="comma-separated, from: " + ", ".join(CONFIGS)
                   + " (default: all; with --quick: small,bench-tiny)")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--steps", type=int, default=None, help="timed samples per framework (default 5; --quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; --quick 1)")
    p.add_argument("--quick", action="store_true", help="small,bench-tiny only, 3 samples, 1 warm-up, no memory runs")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS child processes")
    p.add_argument("--show-busy", action="store_true", help="print figures taken under background load (marked *)")
    p.add_argument("--ghz", type=float, default=None, help="clock for the fp32 peak (default: /proc/cpuinfo)")
    p.add_argument("--fma-units", type=int, default=None,
                   help="full-width FMA units per core for the fp32 peak (default: 1 on AMD Zen 4, else 2)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="instead of the bench: cProfile N tinygpt steps of the first config")
    p.add_argument("--profile-top", type=int, default=30)
    p.add_argument("--twins-vs-book", action="store_true",
                   help="instead of the bench: tinygpt's twins against its book classes, paired, first config")
    p.add_argument("--book-classes", action="store_true",
                   help="time tinygpt's GPTModel as built (the book's classes), not for_training's twins")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--json", default=None, help="also write all results to this JSON file")
    # child modes (internal)
    for mode in ("--child-time", "--child-mem", "--child-profile", "--child-pair"):
        p.add_argument(mode, action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--framework", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.steps = args.steps or (3 if args.quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    return args


def main():
    args = parse_args()
    if args.child_time or args.child_mem or args.child_profile or args.child_pair:
        args.threads = int(args.threads)
        return (child_time if args.child_time else child_mem if args.child_mem else
                child_pair if args.child_pair else child_profile)(args)

    require("torch", "llms_from_scratch")
    configs = (args.configs or ("small,bench-tiny" if args.quick else ",".join(CONFIGS))).split(",")
    for c in configs:
        if c not in CONFIGS:
            sys.exit(f"unknown config {c!r}: choose from {', '.join(CONFIGS)}")
    thread_counts = [int(t) for t in args.threads.split(",")]
    if args.profile:
        return run_child("--child-profile", args, configs[0], thread_counts[-1])
    if args.twins_vs_book:
        for threads in thread_counts:
            run_child("--child-pair", args, configs[0], threads)
        return None

    info = cpu_info()
    core_peak, formula = fp32_peak(info, cores=1, fma_units=args.fma_units, ghz=args.ghz)
    print(header("tinygpt training-step bench (bench/train_step.py)"))
    print("# tinygpt model: " + ("GPTModel's own (book) classes" if args.book_classes
                                 else "for_training(GPTModel(cfg)): the fast attention twins"))
    print(f"# fp32 peak per core (assumed): {formula}; MFU uses threads x {core_peak:.0f} GFLOP/s")
    print(f"# {args.steps} timed samples per framework after {args.warmup} warm-up step(s); "
          f"median; a multi-thread figure with background > 0.2 cores is not reported")
    for c in configs:
        cfg, bs = CONFIGS[c]
        print(f"# {c}: {cfg}, batch {bs}; model MFLOP/token: train {flops_per_token(cfg) / 1e6:.2f}, "
              f"eval {flops_per_token(cfg, False) / 1e6:.2f}")
    sys.stdout.flush()

    results = {"cpu": info, "core_peak_gflops": core_peak, "peak_formula": formula, "args": vars(args),
               "runs": [], "memory": []}
    for threads in thread_counts:
        for c in configs:
            t0 = time.perf_counter()
            r = run_child("--child-time", args, c, threads)
            r["child_wall_s"] = time.perf_counter() - t0
            results["runs"].append(r)
            tg, pt = r["train"]["tinygpt"], r["train"]["torch"]
            print(f"#   {c}, {threads} thread(s): tinygpt {tg['tokens_per_s']:.0f} tok/s, torch "
                  f"{pt['tokens_per_s']:.0f} tok/s (bg {max(tg['load'], pt['load']):.2f} cores; "
                  f"{r['child_wall_s']:.0f} s)", flush=True)
    if not (args.quick or args.no_memory):
        for c in configs:
            row = {"config": c}
            for fw in ("tinygpt", "torch"):
                row[fw] = run_child("--child-mem", args, c, thread_counts[-1], framework=fw)
            results["memory"].append(row)

    print_tables(results, args)
    if args.json:
        write_json(args.json, results)


def print_tables(results, args):
    core_peak = results["core_peak_gflops"]
    for kind, title in (("train", "Training step (forward, cross-entropy, backward, AdamW)"),
                        ("eval", "Forward-only evaluation (eval mode, no_grad, forward + cross-entropy)")):
        rows = []
        for r in results["runs"]:
            cfg, _ = CONFIGS[r["config"]]
            tg, pt = r[kind]["tinygpt"], r[kind]["torch"]
            load = max(tg["load"], pt["load"])
            hide = busy(load, r["threads"]) and not args.show_busy
            mark = "*" if busy(load, r["threads"]) and not hide else ""
            peak = core_peak * r["threads"]
            fpt = flops_per_token(cfg, kind == "train")
            mfu = [s["tokens_per_s"] * fpt / 1e9 / peak * 100 for s in (tg, pt)]
            of_gemm = [s["tokens_per_s"] * fpt / 1e9 / r["gemm_gflops"] * 100 for s in (tg, pt)]
            row = [r["config"], r["threads"], fmt(tg["tokens_per_s"], ".0f", hide) + mark,
                   fmt(pt["tokens_per_s"], ".0f", hide) + mark,
                   fmt(tg["tokens_per_s"] / pt["tokens_per_s"], ".2f", hide) + mark]
            if kind == "train":
                row += ["busy" if hide else "/".join(f"{s[k]:.0f}" if s[k] >= 10 else f"{s[k]:.1f}"
                                                     for k in ("fwd_ms", "bwd_ms", "opt_ms"))
                        for s in (tg, pt)]
            row += [fmt(mfu[0], ".1f", hide) + mark, fmt(mfu[1], ".1f", hide) + mark,
                    f"{r['gemm_gflops']:.0f}", "/".join(fmt(v, ".0f", hide) for v in of_gemm) + mark,
                    f"{tg['load']:.2f}/{pt['load']:.2f}"]
            rows.append(row)
        heads = ["config", "threads", "tinygpt tok/s", "torch tok/s", "speed-up"]
        if kind == "train":
            heads += ["tinygpt fwd/bwd/opt ms", "torch fwd/bwd/opt ms"]
        heads += ["tinygpt MFU %", "torch MFU %", "GEMM GFLOP/s", "of GEMM % tg/pt", "bg load tg/pt"]
        print(f"\n### {title}\n")
        print(markdown_table(heads, rows))
        losses = [f"{r['config']}/{r['threads']}t: {r['loss0']['tinygpt']:.5f} vs {r['loss0']['torch']:.5f}"
                  for r in results["runs"]]
        if kind == "train":
            over = [r for r in results["runs"] if r["gemm_gflops"] > core_peak * r["threads"]]
            if over:
                # VMs often report the nominal clock while the cores boost above it.
                print(f"\nWARNING: np.matmul alone reached {max(r['gemm_gflops'] / r['threads'] for r in over):.0f}"
                      f" GFLOP/s per core, above the assumed peak of {core_peak:.0f}: the cores run faster than"
                      f" the reported clock, so the MFU columns overstate; trust 'of GEMM %' or pass --ghz.")
            bad = [r for r in results["runs"] if abs(r["loss0"]["tinygpt"] - r["loss0"]["torch"]) > 1e-3]
            print(f"\nSame weights check (eval loss before training, tinygpt vs torch): {'; '.join(losses)}"
                  + ("  WARNING: differ" if bad else ""))
    if results["memory"]:
        rows = [[m["config"], f"{m['tinygpt']['peak_rss_mb']:.0f}", f"{m['torch']['peak_rss_mb']:.0f}",
                 f"{m['tinygpt']['peak_rss_mb'] / m['torch']['peak_rss_mb']:.2f}"] for m in results["memory"]]
        print("\n### Peak resident memory of a training process "
              "(model + 2 training steps, one framework per process)\n")
        print(markdown_table(["config", "tinygpt MB", "torch MB", "tinygpt/torch"], rows))
    if any(busy(max(r["train"]["tinygpt"]["load"], r["train"]["torch"]["load"]), r["threads"])
           for r in results["runs"]):
        print("\n'busy' / *: taken while other processes used > 0.2 cores; rerun on a quiet machine.")


if __name__ == "__main__":
    main()
