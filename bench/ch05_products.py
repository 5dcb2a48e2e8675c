"""Where the chapter-5 run's time goes: its matrix products against everything else, in tinygpt
and in the book's PyTorch code, on the same setup (GPT-2 124M, context 256, batch 2, AdamW, the
book's 90/10 split of "The Verdict"), and the shortest run each side could make if nothing but
its products took time.

    python bench/ch05_products.py                # 2 threads, 5 steps + 1 evaluation per side
    python bench/ch05_products.py --steps 9 --threads 1

Each side runs in its own child (threads set before NumPy / torch load). After one untimed
training step (compile, first touch of the optimizer state) it times `--steps` training steps and
one evaluation (the book's: 5 training batches + 1 validation batch, eval mode, no gradients).
tinygpt: every `kernels.matmul` call (the Linear products, forward and backward) is timed from
outside and its layout recorded; the blocked causal attention kernel is timed apart. Then the
recorded products of one step and of one evaluation are timed alone, back to back on operands
made once per layout: with np.matmul in tinygpt's child and with torch.matmul in the book's (a
profiler inside the book's run doubled its step time, so its products are not timed in place).
The whole run is 90 steps and 18 evaluations; `bench/ch05_run.py` times it end to end and splits
it into phases (samples, checkpoint and start-up are not in these segments).
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (ROOT, LoadMeter, busy, framework_parser, gemm_gflops, header,  # noqa: E402
                     markdown_table, openblas_threads_sleep, require, run_child, set_threads)
from train_step import flops_per_token  # noqa: E402

VERDICT = os.path.join(ROOT, "src", "tinygpt", "assets", "the-verdict.txt")
CONFIGS = {   # tinygpt.train.pretrain.PRESETS' book-124M (the run) and tiny (a smoke test)
    "book-124M": {"vocab_size": 50257, "context_length": 256, "emb_dim": 768, "n_heads": 12,
                  "n_layers": 12, "drop_rate": 0.1, "qkv_bias": False},
    "tiny": {"vocab_size": 50257, "context_length": 64, "emb_dim": 64, "n_heads": 4, "n_layers": 2,
             "drop_rate": 0.0, "qkv_bias": False}}
RUN_STEPS, RUN_EVALS = 90, 18   # the book's run: 10 epochs of 9 steps, an evaluation every 5


class Clock:
    """Seconds and FLOPs of the wrapped calls since the last reset."""

    def __init__(self):
        self.start()

    def start(self):
        self.seconds, self.flops, self.shapes = {}, {}, []

    def wrap(self, owner, name, phase, flops=None):
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0
            if flops is not None:
                self.flops[phase] = self.flops.get(phase, 0) + flops(*args)
                self.shapes.append(_layout(*args[:2]))
            return out
        setattr(owner, name, timed)


def _matmul_flops(a, b, *_):
    return 2 * a.size * b.shape[-1]   # (..., M, K) @ (..., K, N): 2 M K N per batch item


def _layout(a, b):
    """A product's shapes and whether each operand is a transposed view (x @ W.T, G.T @ X)."""
    return [list(a.shape), list(b.shape), a.ndim == 2 and not a.flags.c_contiguous,
            b.ndim == 2 and not b.flags.c_contiguous]


def _numpy_operands(shape, transposed):
    import numpy as np
    x = np.random.default_rng(0).standard_normal(shape[::-1] if transposed else shape, dtype=np.float32)
    return x.T if transposed else x


def _torch_operands(shape, transposed):
    import torch
    x = torch.randn(shape[::-1] if transposed else shape)
    return x.T if transposed else x


def replay(products, operands, matmul, repeats=3) -> float:
    """Seconds of one pass over `products` (the layouts a segment ran), each product alone on
    operands made once per layout; the best of `repeats` passes."""
    made = {}
    for a, b, at, bt in products:
        key = (tuple(a), tuple(b), at, bt)
        if key not in made:
            x, w = operands(a, at), operands(b, bt)
            made[key] = (x, w, matmul(x, w, None))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for a, b, at, bt in products:
            x, w, c = made[(tuple(a), tuple(b), at, bt)]
            matmul(x, w, c)
        best = min(best, time.perf_counter() - t0)
    return best


def tinygpt_side(cfg, steps, products=None):
    openblas_threads_sleep()   # as examples/ch05_pretrain.py, before NumPy loads (see _common)
    import numpy as np
    from tinygpt import kernels
    from tinygpt.core.random import manual_seed
    from tinygpt.model import GPTModel, for_training
    from tinygpt.optim import AdamW
    from tinygpt.train.loop import evaluate_model
    from tinygpt.train.loss import calc_loss_batch
    from tinygpt.train.pretrain import _loaders
    with open(VERDICT, encoding="utf-8") as f:
        text = f.read()
    manual_seed(123)
    train_loader, val_loader = _loaders(text, 0.9, 2, cfg["context_length"], 123)
    model = for_training(GPTModel(cfg))
    optimizer = AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    clock = Clock()
    clock.wrap(kernels, "matmul", "linear products", _matmul_flops)
    clock.wrap(kernels, "causal_attention_forward", "attention")
    clock.wrap(kernels, "causal_attention_backward", "attention")

    def step(batch):
        optimizer.zero_grad()
        loss = calc_loss_batch(batch[0], batch[1], model)
        loss.backward()
        optimizer.step()
    out = _segments(list(train_loader), step,
                    lambda: evaluate_model(model, train_loader, val_loader, 5), clock, steps)
    for seg in ("step", "evaluation"):   # the same products alone, with np.matmul (what tinygpt calls)
        out[seg]["alone"] = replay(out[seg]["products"], _numpy_operands,
                                   lambda a, b, c: np.matmul(a, b, out=c))
    # train_step.py's "of GEMM" measure for this step: model FLOPs over its np.matmul probe
    out["gemm_gflops"] = gemm_gflops()
    out["model_gflop_step"] = flops_per_token(cfg) * 2 * cfg["context_length"] / 1e9   # batch 2
    return out


def torch_side(cfg, steps, products=None):
    import torch
    from llms_from_scratch.ch02 import create_dataloader_v1
    from llms_from_scratch.ch04 import GPTModel
    from llms_from_scratch.ch05 import calc_loss_batch, evaluate_model
    import tiktoken
    from tinygpt.tokenizer import get_gpt2_tokenizer
    online = tiktoken.get_encoding   # offline: tinygpt's shipped ranks are the same encoding
    tiktoken.get_encoding = lambda name: get_gpt2_tokenizer() if name == "gpt2" else online(name)
    with open(VERDICT, encoding="utf-8") as f:
        text = f.read()
    split = int(0.9 * len(text))
    torch.manual_seed(123)
    ctx = cfg["context_length"]
    train_loader = create_dataloader_v1(text[:split], batch_size=2, max_length=ctx, stride=ctx,
                                        drop_last=True, shuffle=True, num_workers=0)
    val_loader = create_dataloader_v1(text[split:], batch_size=2, max_length=ctx, stride=ctx,
                                      drop_last=False, shuffle=False, num_workers=0)
    model = GPTModel(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)
    model.train()

    def step(batch):
        optimizer.zero_grad()
        calc_loss_batch(batch[0], batch[1], model, "cpu").backward()
        optimizer.step()

    def evaluate():
        evaluate_model(model, train_loader, val_loader, "cpu", 5)
        model.train()   # the book's loop sets train mode again at the next epoch
    out = _segments(list(train_loader), step, evaluate, Clock(), steps)
    if products:   # tinygpt's products of each segment, timed alone with torch's matmul
        for seg in ("step", "evaluation"):
            out[seg]["products"] = products[seg]
            out[seg]["alone"] = replay(products[seg], _torch_operands, lambda a, b, c: torch.matmul(a, b))
    return out


def _segments(batches, step, evaluate, clock, steps) -> dict:
    """One untimed step, then `steps` timed steps and one timed evaluation: wall seconds, and
    the clock's seconds and FLOPs per phase, for each segment."""
    step(batches[-1])
    out = {}
    for name, run in (("step", lambda: [step(batches[i % len(batches)]) for i in range(steps)]),
                      ("evaluation", evaluate)):
        clock.start()
        t0 = time.perf_counter()
        run()
        wall = time.perf_counter() - t0
        count = steps if name == "step" else 1
        out[name] = {"wall": wall / count, "products": clock.shapes[:len(clock.shapes) // count],
                     "seconds": {k: v / count for k, v in clock.seconds.items()},
                     "gflop": {k: v / count / 1e9 for k, v in clock.flops.items()}}
    return out


def child(args):
    set_threads(args.threads)
    products = None
    if args.products:
        with open(args.products, encoding="utf-8") as f:
            products = json.load(f)
    meter = LoadMeter()
    with meter:
        out = (tinygpt_side if args.framework == "tinygpt" else torch_side)(CONFIGS[args.config],
                                                                            args.steps, products)
    out.update(framework=args.framework, load=meter.cores)
    print(json.dumps(out))


def summary(results) -> str:
    """Per framework and segment: wall seconds; the products' seconds in the run (tinygpt), and
    the same products alone with the framework's matmul; the rest. Then the whole run (90 steps +
    18 evaluations) from these, and the ratio tinygpt would reach if only its products took time."""
    rows, runs = [], {}
    for r in results:
        run = {"wall": 0.0, "alone": 0.0, "in run": 0.0}
        for seg, times in (("step", RUN_STEPS), ("evaluation", RUN_EVALS)):
            s = r[seg]
            lin = s["seconds"].get("linear products")
            att = s["seconds"].get("attention")
            alone = s.get("alone")
            gflop = sum(2 * math.prod(a) * b[-1] for a, b, *_ in s["products"]) / 1e9
            rows.append([r["framework"], seg, f"{s['wall']:.3f}", fmt(lin), fmt(alone),
                         f"{gflop / alone:.0f}" if alone else "-", fmt(att),
                         fmt(s["wall"] - (lin or 0) - (att or 0)) if lin else "-"])
            run["wall"] += times * s["wall"]
            run["alone"] += times * (alone or 0)
            run["in run"] += times * (lin or 0)
        runs[r["framework"]] = run
        rows.append([r["framework"], f"run: {RUN_STEPS} steps + {RUN_EVALS} evaluations",
                     f"{run['wall']:.0f}", fmt(run["in run"] or None, ".0f"),
                     fmt(run["alone"] or None, ".0f"), "", "", ""])
    table = markdown_table(["framework", "segment", "wall s", "Linear products in the run s",
                            "same products alone s", "alone GFLOP/s", "attention s", "rest s"], rows)
    if "tinygpt" in runs and "torch" in runs:
        ours, book = runs["tinygpt"], runs["torch"]
        table += (f"\n\ntinygpt / book over steps and evaluations: {ours['wall'] / book['wall']:.2f}x. "
                  f"With nothing but its Linear products taking time, tinygpt would take "
                  f"{ours['in run']:.0f} s: {ours['in run'] / book['wall']:.2f}x the book's "
                  f"{book['wall']:.0f} s. The products alone: numpy {ours['alone']:.0f} s, torch "
                  f"{book['alone']:.0f} s.")
    ours = next((r for r in results if r["framework"] == "tinygpt"), None)
    if ours and "gemm_gflops" in ours:
        table += "\n\n" + of_gemm(ours)
    return table


def of_gemm(r) -> str:
    """The step as `bench/train_step.py` rates it (model FLOPs a step at its np.matmul probe's
    GFLOP/s, best of 7, over the step's time), and the most that measure could show if only the
    products, or the products and attention, took time."""
    s = r["step"]
    bound = r["model_gflop_step"] / r["gemm_gflops"]
    lin, att = s["seconds"].get("linear products", 0.0), s["seconds"].get("attention", 0.0)
    return (f"The training step against train_step.py's GEMM bound: {r['model_gflop_step']:.0f} GFLOP "
            f"of model FLOPs at the probe's {r['gemm_gflops']:.0f} GFLOP/s is {bound:.3f} s; the step "
            f"took {s['wall']:.3f} s, {100 * bound / s['wall']:.0f}% of GEMM. Were the step nothing but "
            f"its products timed alone ({s['alone']:.3f} s), {100 * bound / s['alone']:.0f}%; its products "
            f"and attention in the run ({lin + att:.3f} s), {100 * bound / (lin + att):.0f}%.")


def fmt(value, spec=".3f"):
    return "-" if value is None else format(value, spec)


def main():
    p = framework_parser(__doc__)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--config", choices=sorted(CONFIGS), default="book-124M",
                   help="book-124M: the chapter-5 run's model (default); tiny: a smoke test")
    p.add_argument("--products", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.only != "tinygpt":
        require("torch", "llms_from_scratch")
    print(header("chapter-5 run: products against the rest (bench/ch05_products.py)"))
    results = []
    products_file = os.path.join(tempfile.mkdtemp(), "products.json")
    for fw in ([args.only] if args.only else ["tinygpt", "torch"]):
        extra = ["--steps", str(args.steps), "--config", args.config]
        r = run_child(__file__, fw, args.threads, *extra, *(["--products", products_file] if results else []))
        mark = " (busy: rerun on a quiet machine)" if busy(r["load"], args.threads) else ""
        print(f"#   {fw}: background {r['load']:.2f} cores{mark}", flush=True)
        results.append(r)
        with open(products_file, "w", encoding="utf-8") as f:
            json.dump({seg: r[seg]["products"] for seg in ("step", "evaluation")}, f)
    os.unlink(products_file)
    print()
    print(summary(results))


if __name__ == "__main__":
    main()
