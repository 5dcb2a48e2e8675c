"""Kernel bench: Numba kernel vs NumPy reference vs PyTorch, per GPT-2 shape, same thread count.

    python bench/kernels.py [--quick] [--threads 1,2] [--dtype float32] [--only softmax,...]

Each thread count runs in its own subprocess with OPENBLAS_NUM_THREADS = NUMBA_NUM_THREADS = n
(the kernels' thread count) and torch.set_num_threads(n), so all three sides get the same cores.
Times are medians of repeats run in alternating blocks (ms). Ratios > 1 mean the Numba kernel is faster ("np/nb"
vs NumPy, "pt/nb" vs PyTorch). For matmul, "numba" is our GEMM (``gemm_numba``) whatever the rule,
or for few-row products against a weight (decoding) our GEMV (``gemv_numba``); "rule" is the path
``kernels.matmul`` picks (the rule must never pick a slower path).

Also reported: cold / warm compile (import + first call of every kernel, float32 then float64) in a
subprocess with a fresh NUMBA_CACHE_DIR, wall and CPU seconds; whether OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE were set (unset them for a reference run); and the background load (CPU used by
other processes during each row, from /proc/stat minus our own CPU time). Trust no 2-thread figure
taken with load > ~0.2 cores.
"""
import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import IDLE_S, cpu_busy_seconds, own_cpu_seconds, warm  # noqa: E402

B, T, C, H, V, FF = 2, 256, 768, 12, 50257, 3072  # GPT-2 124M, batch 2 x ctx 256
N = B * T


# ---------------------------------------------------------------- cases (run in the child)

def cases(quick, np, torch, K):
    """Yield (kernel, shape label, numba fn, numpy fn, torch fn); fns take no arguments."""
    F = torch.nn.functional
    rng = np.random.default_rng(0)

    def arr(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(DT)

    def tt(a):
        return torch.from_numpy(a)

    nbk, ref = K.NUMBA, K.REFERENCE

    # matmul: Linear x @ W.T (W (out, in)), input grad G @ W, weight grad X.T @ G, attention
    mm = [("qkv x@W.T", (N, C), (3 * C, C), "T"), ("ff1 x@W.T", (N, C), (FF, C), "T"),
          ("ff2 x@W.T", (N, FF), (C, FF), "T"), ("dW ff1 G.T@X", (FF, N), (N, C), "AT"),
          ("dX ff1 G@W", (N, FF), (FF, C), ""), ("lm head x@W.T", (N, C), (V, C), "T"),
          ("attn q@k.T", (B * H, T, 64), (B * H, T, 64), "T"), ("attn p@v", (B * H, T, T), (B * H, T, 64), ""),
          ("attn p.T@do", (B * H, T, T), (B * H, T, 64), "AT"),
          ("small q@k.T", (32, 128, 64), (32, 128, 64), "T"), ("small p@v", (32, 128, 128), (32, 128, 64), ""),
          ("tiny q@k.T", (64, 64, 16), (64, 64, 16), "T"), ("tiny p@v", (64, 64, 64), (64, 64, 16), ""),
          ("tiny x@W.T", (1024, 64), (192, 64), "T"),
          # decoding one token (M = 1): a decode step streams all 495 MB of weights from memory,
          # so each call here takes the next of enough weight copies (>= 128 MB) to defeat the caches
          ("decode x@W.T", (1, C), (C, C), "T"), ("decode ff1", (1, C), (FF, C), "T"),
          ("decode ff2", (1, FF), (C, FF), "T"), ("decode head", (1, C), (V, C), "T")]
    if quick:
        mm = [m for m in mm if m[0] in ("qkv x@W.T", "dW ff1 G.T@X", "attn q@k.T", "attn p@v",
                                         "small p@v", "tiny q@k.T", "tiny p@v", "decode ff1", "decode head")]
    for label, sa, sb, how in mm:
        a, b = arr(*sa), arr(*sb)
        if "T" in how.replace("AT", ""):
            b = b.swapaxes(-1, -2)        # a transposed view, as the engine passes it
        if how == "AT":
            a = arr(*sa[:-2], sa[-1], sa[-2]).swapaxes(-1, -2)
        rule = "numba" if K._mm.use_numba_gemm(a, b) else "blas"
        ours = K._mm.gemm_numba
        if K._mm.shape_class(a, b) == "gemv":
            ours = lambda a, b: K._mm.gemv_numba(a, b.T)  # noqa: E731 - the few-row kernel
            rule = "gemv" if rule == "numba" else rule
        if label.startswith("decode"):
            copies = [b] + [arr(*sb).swapaxes(-1, -2) for _ in range((128 << 20) // b.nbytes)]
            nxt = itertools.cycle(range(len(copies))).__next__
            tcopies = [tt(w) for w in copies]
            yield ("matmul", f"{label} {sa}@{b.shape}",
                   lambda a=a, ours=ours, w=copies, nxt=nxt: ours(a, w[nxt()]),
                   lambda a=a, w=copies, nxt=nxt: np.matmul(a, w[nxt()]),
                   lambda ta=tt(a), w=tcopies, nxt=nxt: torch.matmul(ta, w[nxt()]), rule)
            continue
        ta, tb = tt(a), tt(b)
        yield ("matmul", f"{label} {sa}@{b.shape}", lambda a=a, b=b, ours=ours: ours(a, b),
               lambda a=a, b=b: np.matmul(a, b), lambda ta=ta, tb=tb: torch.matmul(ta, tb), rule)

    x = arr(B, H, T, T, scale=3.0)
    y = ref["softmax_forward"](x)
    dy = arr(B, H, T, T)
    tx, ty, tdy = tt(x), tt(y), tt(dy)
    sh = f"{x.shape}"
    yield ("softmax fwd", sh, lambda: nbk["softmax_forward"](x), lambda: ref["softmax_forward"](x),
           lambda: torch.softmax(tx, -1), None)
    yield ("softmax bwd", sh, lambda: nbk["softmax_backward"](y, dy), lambda: ref["softmax_backward"](y, dy),
           lambda: torch._softmax_backward_data(tdy, ty, -1, ty.dtype), None)
    scale = 0.125
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    yc = ref["causal_softmax_forward"](x, scale)
    tyc = tt(yc)
    yield ("causal softmax fwd", sh, lambda: nbk["causal_softmax_forward"](x, scale),
           lambda: ref["causal_softmax_forward"](x, scale),
           lambda: torch.softmax((tx * scale).masked_fill(mask, float("-inf")), -1), None)
    yield ("causal softmax bwd", sh, lambda: nbk["causal_softmax_backward"](yc, dy, scale),
           lambda: ref["causal_softmax_backward"](yc, dy, scale),
           lambda: torch._softmax_backward_data(tdy, tyc, -1, tyc.dtype) * scale, None)
    # the same fused with the attention dropout (p=0.1), against torch's masked softmax + dropout
    _, yd, keep = ref["causal_softmax_dropout_forward"](x, scale, 0.1, 3)
    tkeep = torch.from_numpy(keep)
    yield ("causal softmax+dropout fwd", sh, lambda: nbk["causal_softmax_dropout_forward"](x, scale, 0.1, 3),
           lambda: ref["causal_softmax_dropout_forward"](x, scale, 0.1, 3),
           lambda: torch.native_dropout(torch.softmax((tx * scale).masked_fill(mask, float("-inf")), -1),
                                        0.1, True), None)
    yield ("causal softmax+dropout bwd", sh,
           lambda: nbk["causal_softmax_dropout_backward"](yd, keep, dy, scale, 0.1),
           lambda: ref["causal_softmax_dropout_backward"](yd, keep, dy, scale, 0.1),
           lambda: torch._softmax_backward_data(torch.ops.aten.native_dropout_backward(tdy, tkeep, 1 / 0.9),
                                                tyc, -1, tyc.dtype) * scale, None)

    # decoding: one new query per head against a 108-position KV cache (the middle of a 200-token
    # generation), the cache buffers sized for the context; torch: its fused attention on the prefix
    qd, kc, vc = arr(1, H, 1, 64), arr(1, H, T, 64), arr(1, H, T, 64)
    tqd, tkc, tvc = tt(qd), tt(kc[:, :, :108]), tt(vc[:, :, :108])
    yield ("cached attention", f"{qd.shape} over 108 of {kc.shape}",
           lambda: nbk["cached_attention"](qd, kc, vc, 108, scale), lambda: ref["cached_attention"](qd, kc, vc, 108, scale),
           lambda: torch.nn.functional.scaled_dot_product_attention(tqd, tkc, tvc, scale=scale), None)

    def layernorm_cases(rows, d):
        x, w, b, dy = arr(rows, d, scale=2.0), arr(d), arr(d), arr(rows, d)
        _, mean, rstd = ref["layernorm_forward"](x, w, b, 1e-5)
        tx, tw, tb, tdy = tt(x), tt(w), tt(b), tt(dy)
        _, tm, tr = torch.native_layer_norm(tx, (d,), tw, tb, 1e-5)
        sh = f"({rows}, {d})"
        yield ("layernorm fwd", sh, lambda: nbk["layernorm_forward"](x, w, b, 1e-5),
               lambda: ref["layernorm_forward"](x, w, b, 1e-5),
               lambda: torch.native_layer_norm(tx, (d,), tw, tb, 1e-5), None)
        yield ("layernorm bwd", sh, lambda: nbk["layernorm_backward"](dy, x, w, mean, rstd),
               lambda: ref["layernorm_backward"](dy, x, w, mean, rstd),
               lambda: torch.ops.aten.native_layer_norm_backward(tdy, tx, (d,), tm, tr, tw, tb,
                                                                  [True, True, True]), None)

    def gelu_cases(rows, d):
        x, dy = arr(rows, d, scale=2.0), arr(rows, d)
        tx, tdy = tt(x), tt(dy)
        sh = f"({rows}, {d})"
        yield ("gelu fwd", sh, lambda: nbk["gelu_forward"](x), lambda: ref["gelu_forward"](x),
               lambda: F.gelu(tx, approximate="tanh"), None)
        yield ("gelu bwd", sh, lambda: nbk["gelu_backward"](x, dy), lambda: ref["gelu_backward"](x, dy),
               lambda: torch.ops.aten.gelu_backward(tdy, tx, approximate="tanh"), None)

    def cross_entropy_cases(rows, vocab):
        x = arr(rows, vocab, scale=2.0)
        tg = rng.integers(0, vocab, rows)
        tg[::7] = -100
        _, lse = ref["cross_entropy_forward"](x, tg, -100)
        tx, ttg = tt(x), tt(tg)
        ls = torch.log_softmax(tx, -1)
        _, total_weight = torch.ops.aten.nll_loss_forward(ls, ttg, None, 1, -100)
        gout = torch.ones((), dtype=ls.dtype)
        out = np.empty_like(x)  # the engine reuses its logits-gradient buffer (out=)
        sh = f"({rows}, {vocab})"
        yield ("cross-entropy fwd", sh, lambda: nbk["cross_entropy_forward"](x, tg, -100),
               lambda: ref["cross_entropy_forward"](x, tg, -100),
               lambda: F.cross_entropy(tx, ttg, ignore_index=-100), None)
        yield ("cross-entropy bwd", sh,
               lambda: nbk["cross_entropy_backward"](x, tg, lse, -100, 1.0, out=out),
               lambda: ref["cross_entropy_backward"](x, tg, lse, -100, 1.0, out=out),
               lambda: torch._log_softmax_backward_data(
                   torch.ops.aten.nll_loss_backward(gout, ls, ttg, None, 1, -100, total_weight),
                   ls, -1, ls.dtype),
               None)

    # GPT-2 124M, then the small (emb 256) and tiny (emb 64, vocab 512) configs; --quick: the first
    for rows, d in ((N, C), (1024, 256), (1024, 64))[:1 if quick else 3]:
        yield from layernorm_cases(rows, d)
    for rows, d in ((N, FF), (1024, 1024))[:1 if quick else 2]:
        yield from gelu_cases(rows, d)
    for rows, vocab in ((N, V), (1024, V), (1024, 512))[:1 if quick else 3]:
        yield from cross_entropy_cases(rows, vocab)

    # AdamW over GPT-2 124M's tensors, book layout (untied out_head, no qkv bias: 163M params);
    # --quick: one transformer block + pos_emb
    block = [(C, C)] * 3 + [(C, C), (C,), (FF, C), (FF,), (C, FF), (C,), (C,), (C,), (C,), (C,)]
    shapes = ([(V, C), (1024, C)] + block * 12 + [(C,), (C,), (V, C)]) if not quick else block + [(1024, C)]
    params = [arr(*s) for s in shapes]
    grads = [arr(*s) for s in shapes]
    ms = [np.zeros(s, DT) for s in shapes]
    vs = [np.zeros(s, DT) for s in shapes]
    n_par = sum(p.size for p in params)
    tparams = [torch.nn.Parameter(tt(p.copy())) for p in params]
    for tp, g in zip(tparams, grads):
        tp.grad = tt(g)
    opt = torch.optim.AdamW(tparams, lr=1e-4, weight_decay=0.1)
    opt.step()

    def adam(fn):
        for p, g, m, v in zip(params, grads, ms, vs):
            fn(p, g, m, v, 3, 1e-4, 0.9, 0.999, 1e-8, 0.1)

    yield ("adamw", f"{n_par / 1e6:.1f}M params, {len(shapes)} tensors", lambda: adam(nbk["adamw_step"]),
           lambda: adam(ref["adamw_step"]), opt.step, None)

    idx = rng.integers(0, V, (B, T))
    g = arr(B, T, C)
    tidx, tg_ = tt(idx), tt(g)
    yield ("embedding bwd", f"idx {idx.shape}, ({V}, {C})", lambda: nbk["embedding_backward"](idx, g, V),
           lambda: ref["embedding_backward"](idx, g, V),
           lambda: torch.ops.aten.embedding_dense_backward(tg_, tidx, V, -1, False), None)

    # dropout p=0.1 on the attention weights and on the residual stream (torch: its fused native op)
    for shape in ((B, H, T, T), (B, T, C)):
        x = arr(*shape)
        keep = ref["dropout_forward"](x, 0.1, 1)[1]
        tx = tt(x)
        tkeep = tt(keep)
        yield ("dropout fwd", f"{shape}", lambda x=x: nbk["dropout_forward"](x, 0.1, 7),
               lambda x=x: ref["dropout_forward"](x, 0.1, 7),
               lambda tx=tx: torch.native_dropout(tx, 0.1, True), None)
        yield ("dropout bwd", f"{shape}", lambda x=x, keep=keep: nbk["dropout_backward"](x, keep, 0.1),
               lambda x=x, keep=keep: ref["dropout_backward"](x, keep, 0.1),
               lambda tx=tx, tkeep=tkeep: torch.ops.aten.native_dropout_backward(tx, tkeep, 1 / 0.9), None)


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
    global DT
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    import tinygpt.kernels as K
    DT = np.dtype(args.dtype)
    repeats, budget = (9, 2.0) if args.quick else (21, 8.0)
    rows = []
    busy0, own0, wall0 = cpu_busy_seconds(), own_cpu_seconds(), time.perf_counter()
    for kernel, shape, f_nb, f_np, f_pt, rule in cases(args.quick, np, torch, K):
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
            res = subprocess.run([sys.executable, "-c", COMPILE_SNIPPET.format(root=ROOT)], env=env,
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
