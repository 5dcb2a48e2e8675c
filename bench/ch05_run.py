"""The whole chapter-5 run, end to end: tinygpt's `examples/ch05_pretrain.py` against the book's own
PyTorch code (`llms_from_scratch`: ch02 loader, ch04 GPTModel, ch05 train_model_simple) on the same
text, settings and CPU threads.

    python bench/ch05_run.py                 # both, 2 threads (~6 + ~10 min on the 2-core machine)
    python bench/ch05_run.py --only tinygpt --threads 1

The book's setup: "The Verdict" (shipped in tinygpt/assets), 90/10 split, GPT_CONFIG_124M with
context 256, batch 2, AdamW(lr 4e-4, weight decay 0.1), 10 epochs, evaluation every 5 steps over
5 batches, a 50-token greedy sample after each epoch, torch.manual_seed(123). Each side runs in its
own child process (threads set before NumPy / torch load); the parent prints wall time, final
losses and the background load (a 2-thread figure taken with > 0.2 other cores busy is marked).
tinygpt runs as the example and the CLI do: `tinygpt.train.pretrain` trains
`for_training(GPTModel(cfg))`, the fast attention twins (blocked causal attention).

Each side's wall time is split into phases by timing its own functions from outside (wrappers put
in their modules before the run; nothing inside is changed): the 18 evaluations, the 10 samples,
tinygpt's checkpoint writes and Numba warm-up, the training steps (the rest of the training
call) and the start-up (loading, data, model construction: the rest of the child's time).
"""
import importlib
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (ROOT, LoadMeter, busy, framework_parser, header, markdown_table,  # noqa: E402
                     require, run_child, set_threads)

VERDICT = os.path.join(ROOT, "src", "tinygpt", "assets", "the-verdict.txt")


class Phases:
    """Seconds spent inside wrapped functions, by phase name."""

    def __init__(self):
        self.seconds = {}

    def wrap(self, owner, name, phase):
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0
        setattr(owner, name, timed)


def run_torch(phases):
    import tiktoken
    import torch
    from llms_from_scratch.ch02 import create_dataloader_v1
    from llms_from_scratch.ch04 import GPTModel
    from llms_from_scratch import ch05

    from tinygpt.tokenizer import get_gpt2_tokenizer
    # tiktoken.get_encoding("gpt2") downloads its files on first use; the book's loader calls it,
    # so hand it the same encoding built offline from tinygpt's shipped ranks (identical tokens)
    online = tiktoken.get_encoding
    tiktoken.get_encoding = lambda name: get_gpt2_tokenizer() if name == "gpt2" else online(name)

    cfg = {"vocab_size": 50257, "context_length": 256, "emb_dim": 768, "n_heads": 12,
           "n_layers": 12, "drop_rate": 0.1, "qkv_bias": False}
    with open(VERDICT, encoding="utf-8") as f:
        text = f.read()
    split = int(0.9 * len(text))
    torch.manual_seed(123)
    train_loader = create_dataloader_v1(text[:split], batch_size=2, max_length=256, stride=256,
                                        drop_last=True, shuffle=True, num_workers=0)
    val_loader = create_dataloader_v1(text[split:], batch_size=2, max_length=256, stride=256,
                                      drop_last=False, shuffle=False, num_workers=0)
    torch.manual_seed(123)
    model = GPTModel(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)
    phases.wrap(ch05, "evaluate_model", "evaluation")   # train_model_simple finds them here
    phases.wrap(ch05, "generate_and_print_sample", "samples")
    phases.wrap(ch05, "train_model_simple", "training call")
    train, val, _ = ch05.train_model_simple(model, train_loader, val_loader, optimizer, "cpu", num_epochs=10,
                                       eval_freq=5, eval_iter=5, start_context="Every effort moves you",
                                       tokenizer=get_gpt2_tokenizer())
    return train[-1], val[-1]


def run_tinygpt(phases):
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import ch05_pretrain
    from tinygpt.train import trainer
    phases.wrap(trainer._Trainer, "evaluate", "evaluation")
    phases.wrap(trainer, "generate_and_print_sample", "samples")
    phases.wrap(trainer._Trainer, "save", "checkpoint")
    phases.wrap(trainer, "compile_kernels", "compile")
    phases.wrap(importlib.import_module("tinygpt.train.pretrain"), "train_model", "training call")
    result = ch05_pretrain.main(["--quiet", "--out", os.path.join(ROOT, "runs", "bench-ch05")])
    return result["train_losses"][-1], result["val_losses"][-1]


def child(args):
    set_threads(args.threads)
    meter, phases = LoadMeter(), Phases()
    t0 = time.perf_counter()
    with meter:
        train, val = (run_tinygpt if args.framework == "tinygpt" else run_torch)(phases)
    seconds = time.perf_counter() - t0
    out = {"framework": args.framework, "threads": args.threads, "seconds": seconds,
           "phases": split_phases(phases.seconds, seconds),
           "train_loss": float(train), "val_loss": float(val), "load": meter.cores,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(out))


PHASES = ["training steps", "evaluation", "samples", "checkpoint", "compile", "start-up"]


def split_phases(seconds: dict, total: float) -> dict:
    """The wrapped phases, plus the training steps (the rest of the training call) and the
    start-up (the rest of the run)."""
    call = seconds.pop("training call")
    out = dict(seconds)
    out["training steps"] = call - sum(seconds.values())
    out["start-up"] = total - call
    return out


def phase_table(results) -> str:
    """Seconds per phase for each side, and tinygpt's time over the book's where both ran."""
    heads = ["phase"] + [r["framework"] for r in results]
    both = len(results) == 2
    rows = []
    for phase in PHASES + ["total"]:
        vals = [r["seconds"] if phase == "total" else r["phases"].get(phase, 0.0) for r in results]
        row = [phase] + [f"{v:.1f}" for v in vals]
        if both:
            row.append(f"{vals[0] / vals[1]:.2f}x" if vals[1] > 0 else "-")
        rows.append(row)
    return markdown_table(heads + (["tinygpt / book"] if both else []), rows)


def main():
    args = framework_parser(__doc__).parse_args()
    if args.child:
        return child(args)
    if args.only != "tinygpt":
        require("torch", "llms_from_scratch")
    print(header("chapter-5 run end to end (bench/ch05_run.py)"))
    rows, results = [], []
    for fw in ([args.only] if args.only else ["tinygpt", "torch"]):
        r = run_child(__file__, fw, args.threads)
        results.append(r)
        mark = "*" if busy(r["load"], args.threads) else ""
        print(f"#   {fw}: {r['seconds']:.0f} s{mark}, final train {r['train_loss']:.3f} / val "
              f"{r['val_loss']:.3f} (bg {r['load']:.2f} cores)", flush=True)
        rows.append([fw, args.threads, f"{r['seconds']:.0f}{mark}", f"{r['seconds'] / 60:.1f}",
                     f"{r['train_loss']:.3f}", f"{r['val_loss']:.3f}", f"{r['peak_rss_mb']:.0f}",
                     f"{r['load']:.2f}"])
    print()
    print(markdown_table(["framework", "threads", "wall s", "min", "final train loss", "final val loss",
                          "peak RSS MB", "bg load"], rows))
    print()
    print(phase_table(results))
    if any(r[2].endswith("*") for r in rows):
        print("\n*: other processes used > 0.2 cores during the run; rerun on a quiet machine.")


if __name__ == "__main__":
    main()
