"""Decode speed with float32, bf16 and q8 weights (issue 44), on a Qwen3-0.6B-shaped model with
random weights, 1 and 2 threads; and the GEMV kernels alone on Qwen3's output-head shape.

    python bench/quant.py                    # both thread counts (each in a child), short run
    python bench/quant.py --threads 1        # one thread count, in this process
    python bench/quant.py --kernels          # the head-shaped GEMV: f32 / bf16 / q8 flat / q8 nested
    python bench/quant.py --prefill          # prompt products: widened tiles + BLAS vs Numba GEMM
    python bench/quant.py --torch-bf16       # the same products in torch, float32 against bfloat16
    python bench/quant.py --smoke            # a tiny config: checks the script runs (no figures)

Decode tok/s: after a --prompt-tokens prompt, --new-tokens greedy steps through the KV cache,
median ms per step. GB/s: the weight bytes a step reads (every Linear weight and the tied head;
one embedding row) over the median step time. --prefill: the products a prompt of M tokens makes
with Qwen3-0.6B's packed fc1/fc2 (6144 x 1024) and fc3 (1024 x 3072) weights, one thread, each
form checked against the NumPy reference, then timed in turns (the fastest of 9: the machine is
shared and a time-sliced run is only ever slower): float32 np.matmul, and
for bf16 and q8 the weight widened 512 rows at a time into a float32 tile multiplied by
np.matmul ("tiles+BLAS") against a Numba GEMM over the bits/blocks (four rows of x per pass). "background cores": other processes' CPU over
the timed steps (the machine is shared: figures taken with background load are noisy, and a
2-thread figure with a busy second core is not to be trusted). OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE are removed from the children's environment. --torch-bf16: why the book's bf16
code processes prompts faster than tinygpt's bf16 weights: the 512-token prompt products in torch
with float32 and with bfloat16 operands, beside np.matmul and tinygpt's widened bf16 tiles, in
turns in one process (the fastest of 7), with the process's threads; the CPU's flags are printed
(avx512_bf16 multiplies bf16 pairs natively; tinygpt widens bf16 to float32 and runs float32 products).
"""
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import LoadMeter, markdown_table, thread_env  # noqa: E402


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, help="one thread count in this process (default: 1 and 2)")
    p.add_argument("--formats", nargs="*", default=["float32", "bf16", "q8"])
    p.add_argument("--prompt-tokens", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=12)
    p.add_argument("--kernels", action="store_true", help="the output-head GEMV kernels only")
    p.add_argument("--prefill", action="store_true", help="the prompt (GEMM) products only")
    p.add_argument("--torch-bf16", action="store_true", help="prompt products in torch: float32 vs bf16")
    p.add_argument("--smoke", action="store_true")
    return p.parse_args(argv)


ARGS = _parse_args() if __name__ == "__main__" else _parse_args([])
if __name__ == "__main__" and ARGS.threads:  # before NumPy loads
    os.environ.update({k: v for k, v in thread_env(ARGS.threads).items() if k.endswith("NUM_THREADS")})

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
import tinygpt as tg  # noqa: E402
from tinygpt.model import QWEN3_CONFIG_0_6B, Qwen3Model, for_inference  # noqa: E402
from tinygpt.nn import skip_init  # noqa: E402
from tinygpt.quant import QuantEmbedding, QuantLinear, quantize  # noqa: E402
from tinygpt.kernels._jit import chunk_bounds, chunks, njit, run_chunks  # noqa: E402

SMOKE = {**QWEN3_CONFIG_0_6B, "vocab_size": 512, "emb_dim": 64, "hidden_dim": 128, "n_layers": 2,
         "n_heads": 4, "n_kv_groups": 2, "head_dim": 32, "context_length": 128}


def random_model(cfg, seed=0):
    """Qwen3Model(cfg) with weights ~ U(-0.05, 0.05) and unit norms, filled fast (no torch RNG)."""
    rng = np.random.default_rng(seed)
    with skip_init():
        model = Qwen3Model({**cfg, "tie_weights": True})
    for _, p in model.named_parameters():
        if p.data.ndim == 1:
            p.data[:] = 1.0
        else:
            rng.random(out=p.data, dtype=np.float32)
            p.data -= 0.5
            p.data *= 0.1
    return model.eval()


def step_bytes(model) -> int:
    """Weight bytes one decode step reads: every Linear weight (the tied head is the table)."""
    total = 0
    for m in model.modules():
        if isinstance(m, QuantLinear):
            total += m.weight.nbytes
        elif type(m).__name__ == "Linear":
            total += m.weight.data.nbytes
    return total


def decode(model, prompt_tokens, new_tokens):
    """Median seconds per greedy decode step through the KV cache, and the load meter."""
    ids = np.arange(1, prompt_tokens + 1).reshape(1, -1)
    cache = model.new_kv_cache(prompt_tokens + new_tokens + 1)
    times, meter = [], LoadMeter()
    with tg.no_grad():
        logits = model(ids, kv_cache=cache, last_only=True).data
        for _ in range(new_tokens):
            nxt = logits[:, -1].argmax(-1).reshape(1, 1)
            meter.start()
            t0 = time.perf_counter()
            logits = model(nxt, kv_cache=cache, last_only=True).data
            times.append(time.perf_counter() - t0)
            meter.stop()
    return float(np.median(times[1:] or times)), meter


def run_threads(args):
    cfg = SMOKE if args.smoke else QWEN3_CONFIG_0_6B
    rows = []
    for fmt in args.formats:
        model = random_model(cfg)
        model = for_inference(model) if fmt == "float32" else quantize(model, fmt)
        decode(model, 2, 2)  # compile and warm
        sec, meter = decode(model, args.prompt_tokens, args.new_tokens)
        gbytes = step_bytes(model) / 1e9
        rows.append([fmt, str(args.threads), f"{1 / sec:.1f}", f"{sec * 1e3:.0f}",
                     f"{gbytes:.2f}", f"{gbytes / sec:.1f}",
                     f"{meter.other / max(meter.wall, 1e-9):.2f}"])
        del model
    return rows


@njit(fastmath={"reassoc", "contract"})
def _gemv_q8_nested(x, q, s, c, chunk, nchunks):
    # kernels/quant_gemv.py's q8 product written as nested per-block loops: the shape its module
    # docstring explains is slow (LLVM vectorises across blocks with gathers); timed, never used
    M, K = x.shape
    n0, n1 = chunk_bounds(chunk, nchunks, q.shape[0])
    for n in range(n0, n1):
        qn = q[n]
        sn = s[n]
        for m in range(M):
            xm = x[m]
            acc = np.float32(0.0)
            for b in range(K // 32):
                part = np.float32(0.0)
                for j in range(b * 32, b * 32 + 32):
                    part += xm[j] * np.float32(qn[j])
                acc += part * sn[b]
            c[m, n] = acc


def gemv_q8_nested(x, q, s):
    from tinygpt.kernels import quant_gemv as K
    c = np.empty((x.shape[0], q.shape[0]), np.float32)
    run_chunks(_gemv_q8_nested, chunks(q.shape[0], K.MIN_ROWS), x, q, s, c)
    return c


def run_kernels():
    from tinygpt.kernels import quant_gemv as K
    from tinygpt.kernels.gemm import gemv_numba
    tg.kernels.set_num_threads(1)
    n, k = (4096, 1024) if ARGS.smoke else (151936, 1024)
    rng = np.random.default_rng(0)
    w = (rng.random((n, k), dtype=np.float32) - 0.5)
    x = rng.standard_normal((1, k)).astype(np.float32)
    w16, (q, s) = K.float32_to_bf16_ref(w), K.q8_quantize_ref(w)
    cases = [("float32 (gemv_numba)", lambda: gemv_numba(x, w), w.nbytes),
             ("bf16 (widened in the register)", lambda: K.gemv_bf16(x, w16), w16.nbytes),
             ("q8 flat loop, s[n, k >> 5]", lambda: K.gemv_q8(x, q, s), q.nbytes + s.nbytes),
             ("q8 nested per-block loops", lambda: gemv_q8_nested(x, q, s), q.nbytes + s.nbytes)]
    want = K.gemv_q8_ref(x, q, s)  # every form computes the same product before it is timed
    for name, fn, _ in cases:
        err = np.abs(fn() - want).max() / np.abs(want).max()
        assert name.startswith(("float32", "bf16")) or err < 1e-5, f"{name}: relative error {err:.2e}"
    rows = []
    for name, fn, nbytes in cases:
        fn()
        times, meter = [], LoadMeter()
        for _ in range(3 if ARGS.smoke else 15):
            meter.start()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            meter.stop()
        sec = float(np.median(times))
        rows.append([name, f"{sec * 1e3:.2f}", f"{nbytes / sec / 1e9:.1f}",
                     f"{meter.other / max(meter.wall, 1e-9):.2f}"])
    return rows


def run_prefill():
    from tinygpt.kernels import quant_gemv as K
    tg.kernels.set_num_threads(1)
    rng = np.random.default_rng(0)
    shapes = [(256, 64)] if ARGS.smoke else [(6144, 1024), (1024, 3072)]
    rows = []
    for n, k in shapes:
        w = (rng.random((n, k), dtype=np.float32) - 0.5)
        w16, (q, s) = K.float32_to_bf16_ref(w), K.q8_quantize_ref(w)
        for m in ([5, 16] if ARGS.smoke else [8, 16, 32, 64, 128, 512]):
            x = rng.standard_normal((m, k)).astype(np.float32)
            forms = {"float32 np.matmul": (lambda: x @ w.T, x @ w.T),
                     "bf16 tiles+BLAS": (lambda: K.tiled_bf16(x, w16), K.gemv_bf16_ref(x, w16)),
                     "bf16 Numba GEMM": (lambda: K.gemm_bf16(x, w16), K.gemv_bf16_ref(x, w16)),
                     "q8 tiles+BLAS": (lambda: K.tiled_q8(x, q, s), K.gemv_q8_ref(x, q, s)),
                     "q8 Numba GEMM": (lambda: K.gemm_q8(x, q, s), K.gemv_q8_ref(x, q, s))}
            for name, (fn, want) in forms.items():  # each form computes its product, then timed
                err = np.abs(fn() - want).max() / np.abs(want).max()
                assert err < 1e-5, f"{name} M={m}: relative error {err:.2e}"
            times, meter = {name: [] for name in forms}, LoadMeter()
            for _ in range(3 if ARGS.smoke else 9):
                for name, (fn, _) in forms.items():
                    meter.start()
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
                    meter.stop()
            ms = {name: min(t) * 1e3 for name, t in times.items()}  # least disturbed by others
            rows.append([f"{n} x {k}", str(m)] + [f"{v:.2f}" for v in ms.values()]
                        + [f"{meter.other / max(meter.wall, 1e-9):.2f}"])
    return ["weight", "M"] + [f"{name} ms" for name in forms] + ["background cores"], rows


def run_torch_bf16():
    import torch
    from tinygpt.kernels import quant_gemv as K
    rng, rows = np.random.default_rng(0), []
    for n, k in [(256, 64)] if ARGS.smoke else [(6144, 1024), (1024, 3072), (1024, 2048)]:
        m = 16 if ARGS.smoke else 512
        x, w = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((n, k), dtype=np.float32)
        xt, wt, w16 = torch.from_numpy(x), torch.from_numpy(w), K.float32_to_bf16_ref(w)
        xb, wb = xt.bfloat16(), wt.bfloat16()
        forms = {"torch float32": lambda: xt @ wt.T, "torch bf16": lambda: xb @ wb.T,
                 "np.matmul float32": lambda: x @ w.T, "tinygpt bf16 tiles+BLAS": lambda: K.tiled_bf16(x, w16)}
        want = x @ w.T
        for name, fn in forms.items():   # each form computes the product (bf16 inputs: ~1e-2)
            got = fn()
            got = got.float().numpy() if isinstance(got, torch.Tensor) else got
            err = np.abs(got - want).max() / np.abs(want).max()
            assert err < 3e-2, f"{name} {n} x {k}: relative error {err:.2e}"
        times = {name: [] for name in forms}
        for _ in range(3 if ARGS.smoke else 7):
            for name, fn in forms.items():
                fn()
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        gflop = 2 * m * n * k / 1e9
        rows.append([f"{n} x {k}", str(m)] + [f"{gflop / min(t):.0f}" for t in times.values()])
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    print(f"prompt products, GFLOP/s, torch threads {torch.get_num_threads()}, avx512_bf16 "
          f"{'yes' if 'avx512_bf16' in flags else 'no'}, amx_bf16 {'yes' if 'amx_bf16' in flags else 'no'}")
    return ["weight", "M"] + [f"{name}" for name in forms], rows


def main():
    if ARGS.torch_bf16:
        print(markdown_table(*run_torch_bf16()))
        return
    if ARGS.prefill:
        print(f"prompt products, 1 thread, {os.uname().nodename}")
        print(markdown_table(*run_prefill()))
        return
    if ARGS.kernels:
        print(f"GEMV on the output-head shape, 1 thread, {os.uname().nodename}")
        print(markdown_table(["kernel", "ms", "GB/s", "background cores"], run_kernels()))
        return
    head = ["weights", "threads", "decode tok/s", "ms/token", "GB read/token", "GB/s",
            "background cores"]
    if ARGS.threads:
        print(markdown_table(head, run_threads(ARGS)))
        return
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    for threads in (1, 2):
        cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(threads),
               "--prompt-tokens", str(ARGS.prompt_tokens), "--new-tokens", str(ARGS.new_tokens),
               "--formats", *ARGS.formats] + (["--smoke"] if ARGS.smoke else [])
        subprocess.run(cmd, env=thread_env(threads, env), check=True)


if __name__ == "__main__":
    main()
