"""Book chapter 5: pretrain GPT-2 124M (context 256) on "The Verdict", offline.

The book's exact setup: 90/10 split, batch 2, AdamW lr 4e-4 and weight decay 0.1, 10 epochs,
evaluation every 5 steps over 5 batches, seed 123, a greedy sample from "Every effort moves you"
after each epoch. Training loss falls from ~10 to below 1 while validation loss levels off
near 6.4 (the model memorises a 5,000-token story). Writes runs/ch05/model.safetensors (resume with
--resume) and runs/ch05/loss-plot.png.

    python examples/ch05_pretrain.py [--epochs 10] [--config book-124M] [--out runs/ch05]
                                     [--schedule] [--resume runs/ch05/model.safetensors]

--schedule adds appendix D: linear warm-up, cosine decay and gradient clipping. A resumed run
continues with the checkpoint's config and settings (schedule included). `pretrain` trains
`for_training(GPTModel(cfg))`: the book's model with its fast attention twins swapped in.
"""
import argparse
import os
import time

# An application's choice, made before NumPy loads OpenBLAS (which reads it once): OpenBLAS's idle
# threads sleep at once instead of spinning after every matrix product, so tinygpt's own kernels
# between the products (attention, GELU, layer norm, AdamW) get the second core. Measured on a
# 2-core machine: a 124M step 2.94 -> 2.74 s (bench/ch05_products.py, bench/README.md).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from tinygpt.argtypes import positive_int  # noqa: E402
from tinygpt import tune_malloc  # noqa: E402
from tinygpt.assets import asset_path  # noqa: E402
from tinygpt.train.pretrain import pretrain, resolve_config  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=positive_int, help="default 10 (or the checkpoint's)")
    parser.add_argument("--config", help="book-124M (default), small or tiny")
    parser.add_argument("--out", default="runs/ch05")
    parser.add_argument("--resume", help="checkpoint to continue from")
    parser.add_argument("--schedule", action=argparse.BooleanOptionalAction,
                        help="appendix D: warm-up, cosine decay, gradient clipping (default off)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    tune_malloc()  # an application's choice: see tinygpt/core/malloc.py

    text = asset_path("the-verdict.txt").read_text(encoding="utf-8")
    start = time.perf_counter()
    config = args.config or (None if args.resume else "book-124M")  # resume: the checkpoint's
    model, result = pretrain(text, config and resolve_config(config), num_epochs=args.epochs,
                             out_dir=args.out, resume=args.resume, schedule=args.schedule,
                             quiet=args.quiet)
    if result["nothing_to_do"]:
        return result
    wall = time.perf_counter() - start
    print(f"final: train loss {result['train_losses'][-1]:.3f}, "
          f"val loss {result['val_losses'][-1]:.3f}")
    print(f"wall time {wall:.1f} s (training loop {result['seconds']:.1f} s, "
          f"{result['tokens_per_second']:.0f} tokens/s incl. evaluation and samples)")
    print(f"checkpoint {result['checkpoint']}" + (f", plot {result['plot']}" if "plot" in result else ""))
    return result


if __name__ == "__main__":
    main()
