"""Classification fine-tuning step time: the book's frozen setup against training every layer.

One step = zero_grad, forward, last-token cross-entropy, backward, AdamW update, on the same
model (GPT_CONFIG_124M, random weights, new 2-class head, dropout 0.0), batch 8 x 120 tokens.
"frozen" is the book's section 6.5: only the last transformer block, final_norm and the head
require gradients, so the eleven frozen blocks and the embeddings record no graph and get no
gradient or update. "all" trains every parameter. Prints one line: the median step time of each
and the saving.

    python bench/finetune.py [--repeats 5] [--layers 12] [--threads 1]
"""
import argparse
import os
import statistics
import sys
import time


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed steps per setup (after one warm-up)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--tokens", type=int, default=120)
    p.add_argument("--layers", type=int, default=12, help="n_layers of the 124M config")
    p.add_argument("--threads", type=int, default=None, help="set BLAS/Numba thread counts")
    p.add_argument("--seed", type=int, default=123)
    return p.parse_args(argv)


ARGS = _parse_args() if __name__ == "__main__" else _parse_args([])
if ARGS.threads:  # before NumPy/Numba are imported, or it has no effect
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tinygpt as tg  # noqa: E402
from tinygpt.finetune.classify import calc_loss_batch, replace_head, trainable_parameters  # noqa: E402
from tinygpt.model import GPT_CONFIG_124M, GPTModel  # noqa: E402
from tinygpt.optim import AdamW  # noqa: E402


def step_times(model, trainable, inputs, targets, repeats):
    """Seconds per training step (one untimed warm-up first: kernel compilation, AdamW state)."""
    replace_head(model, num_classes=2, trainable=trainable, seed=ARGS.seed)
    optimizer = AdamW(trainable_parameters(model), lr=5e-5, weight_decay=0.1)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = calc_loss_batch(inputs, targets, model)
        loss.backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - start)
    n_train = sum(p.size for p in trainable_parameters(model))
    return times, n_train


def main():
    cfg = {**GPT_CONFIG_124M, "n_layers": ARGS.layers, "drop_rate": 0.0}
    tg.manual_seed(ARGS.seed)
    model = GPTModel(cfg)
    rng = np.random.default_rng(ARGS.seed)
    inputs = rng.integers(0, cfg["vocab_size"], size=(ARGS.batch_size, ARGS.tokens))  # (8, 120)
    targets = rng.integers(0, 2, size=ARGS.batch_size)                                 # (8,)
    load_before = os.getloadavg()[0]
    frozen, n_frozen = step_times(model, "last", inputs, targets, ARGS.repeats)
    full, n_full = step_times(model, "all", inputs, targets, ARGS.repeats)
    f, a = statistics.median(frozen), statistics.median(full)
    print(f"finetune-classify step ({cfg['n_layers']}-layer 124M config, batch {ARGS.batch_size} x "
          f"{ARGS.tokens} tokens, median of {ARGS.repeats}): frozen (last block + final_norm + head, "
          f"{n_frozen / 1e6:.1f}M trainable) {f * 1000:.0f} ms | all layers ({n_full / 1e6:.1f}M) "
          f"{a * 1000:.0f} ms | saving {100 * (1 - f / a):.0f}% "
          f"[load avg {load_before:.1f} -> {os.getloadavg()[0]:.1f}]")


if __name__ == "__main__":
    main()
