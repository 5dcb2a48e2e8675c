"""What bf16 and q8 weights cost in quality (issue 44): each format against float32 on the same
weights, on two models.

    python bench/quant_quality.py                    # both models, 1 thread
    python bench/quant_quality.py --model verdict    # the trained model only
    python bench/quant_quality.py --smoke            # tiny, untrained: checks the script runs

Models:
  qwen3-0.6b-random  QWEN3_CONFIG_0_6B (tied head) with random weights, U(-0.05, 0.05) and unit
                     norms (bench/quant.py's random_model). Its next-token distributions are close
                     to uniform over 151,936 tokens (perplexity near the vocabulary size, whatever
                     the text), so the perplexity column says nothing about language here; the KL
                     and agreement columns still measure how far the rounding moves the logits,
                     through 28 blocks of real width.
  verdict-trained    the CLI preset "tiny" (GPT-2 layout, 2 layers, emb 64, context 64)
                     trained by `tinygpt.train.pretrain` on the first 90% of the-verdict.txt (the
                     book's split) for --steps steps: a model that predicts its text well
                     (training-text perplexity near 1-10) and the held-out 10% poorly (a 5,000-
                     token story memorised, as in the book's chapter 5), so both show the loss.
Every model is built twice more from the same weights and passed to `tinygpt.quant.quantize`.
Columns, each format against float32 over the same token windows (context-length windows of the
text, every position predicting the next token):
  ppl held-out / ppl train  exp(mean cross-entropy) on the held-out (train) text
  KL       mean over positions of KL(p_float32 || p_format) in nats, computed in float64
  top-1    share of positions where the most likely next token is the same
  greedy   --prompts prompts (8-token windows of the held-out text), --greedy tokens each with
           the KV cache: prompts whose tokens are all identical to float32's, and the mean
           length of the identical prefix
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import LoadMeter, header, markdown_table  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
import tinygpt as tg  # noqa: E402
from tinygpt.assets import asset_path  # noqa: E402
from tinygpt.model import GPTModel, QWEN3_CONFIG_0_6B, for_inference, generate  # noqa: E402
from tinygpt.quant import decode_bytes, quantize  # noqa: E402
from tinygpt.tokenizer.gpt2 import get_gpt2_tokenizer  # noqa: E402

FORMATS = ("float32", "bf16", "q8")
SMOKE_QWEN3 = {**QWEN3_CONFIG_0_6B, "vocab_size": 50304, "emb_dim": 64, "hidden_dim": 128,
               "n_layers": 2, "n_heads": 4, "n_kv_groups": 2, "head_dim": 32, "context_length": 128}


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["qwen3", "verdict", "all"], default="all")
    p.add_argument("--steps", type=int, default=400, help="training steps of the verdict model")
    p.add_argument("--tokens", type=int, default=256, help="held-out tokens the random Qwen3 reads")
    p.add_argument("--prompts", type=int, default=6)
    p.add_argument("--greedy", type=int, default=16)
    p.add_argument("--smoke", action="store_true")
    return p.parse_args(argv)


def texts():
    """(training part, held-out part) of the-verdict.txt as GPT-2 token ids: the book's 90/10
    split of the characters."""
    text = asset_path("the-verdict.txt").read_text(encoding="utf-8")
    split = int(0.9 * len(text))
    enc = get_gpt2_tokenizer()
    return np.array(enc.encode(text[:split])), np.array(enc.encode(text[split:]))


def windows(ids, ctx, limit=None):
    """(inputs (n, ctx), targets (n, ctx)) of consecutive non-overlapping windows."""
    ids = ids[:limit + 1] if limit else ids
    n = (len(ids) - 1) // ctx
    return ids[:n * ctx].reshape(n, ctx), ids[1:n * ctx + 1].reshape(n, ctx)


def log_probs(model, inputs):
    """float64 log-softmax of the model's logits for each window, (n * ctx, vocab)."""
    out = []
    with tg.no_grad():
        for row in inputs:
            z = model(row[None]).data[0].astype(np.float64)            # (ctx, vocab)
            z -= z.max(axis=1, keepdims=True)
            out.append(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))
    return np.concatenate(out)


def greedy(model, prompts, n):
    return [generate(model, p[None], n, len(p) + n)[0, len(p):] for p in prompts]


def compare(make, texts_by_name, prompts, args):
    """Rows of the table for one model: make(fmt) builds it with weights in `fmt`."""
    ref, rows = {}, []
    for fmt in FORMATS:
        model = make(fmt)
        lp = {name: log_probs(model, inputs) for name, (inputs, _) in texts_by_name.items()}
        tokens = greedy(model, prompts, args.greedy)
        nbytes = decode_bytes(model)
        del model
        if fmt == "float32":
            ref = {"lp": lp, "tokens": tokens}
        row = [fmt, f"{nbytes / 1e6:,.1f}"]
        for name, (_, targets) in texts_by_name.items():
            nll = -np.take_along_axis(lp[name], targets.reshape(-1, 1), axis=1).mean()
            row.append(f"{np.exp(nll):,.2f}")
        first = next(iter(texts_by_name))
        p32, pq = ref["lp"][first], lp[first]
        kl = (np.exp(p32) * (p32 - pq)).sum(axis=1)
        top1 = (p32.argmax(axis=1) == pq.argmax(axis=1)).mean()
        prefix = [int(np.argmin(np.append(a == b, False))) for a, b in zip(ref["tokens"], tokens)]
        same = sum(p == args.greedy for p in prefix)
        row += [f"{kl.mean():.2e}", f"{kl.max():.2e}", f"{top1:.4f}",
                f"{same}/{len(prompts)}", f"{np.mean(prefix):.1f}/{args.greedy}"]
        rows.append(row)
    return rows


def qwen3_random(args, held_out):
    from quant import random_model
    cfg = SMOKE_QWEN3 if args.smoke else QWEN3_CONFIG_0_6B

    def make(fmt):
        model = random_model(cfg)
        return for_inference(model).eval() if fmt == "float32" else quantize(model, fmt)
    ctx = 64
    inputs = windows(held_out, ctx, 64 if args.smoke else args.tokens)
    prompts = [held_out[i * 8:(i + 1) * 8] for i in range(args.prompts)]
    return compare(make, {"held-out": inputs}, prompts, args)


def verdict_trained(args, train, held_out):
    from tinygpt.train.pretrain import PRESETS, pretrain
    text = asset_path("the-verdict.txt").read_text(encoding="utf-8")
    cfg = dict(PRESETS["tiny"])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        trained, _ = pretrain(text, cfg, num_epochs=10_000, batch_size=8, lr=1e-3,
                              max_steps=args.steps, out_dir=out, quiet=True, plot=False,
                              eval_freq=10_000, seed=123, start_context=None)
    print(f"verdict-trained: {args.steps} steps of 8 x {cfg['context_length']} tokens (AdamW, lr "
          f"1e-3) in {time.perf_counter() - t0:.0f} s")
    state = {k: np.array(v) for k, v in trained.state_dict().items()}

    def make(fmt):
        model = GPTModel(cfg)
        model.load_state_dict(state)
        return for_inference(model.eval()).eval() if fmt == "float32" else quantize(model.eval(), fmt)
    ctx = cfg["context_length"]
    texts_by_name = {"held-out": windows(held_out, ctx), "train": windows(train, ctx, 1024)}
    prompts = [held_out[i * 8:(i + 1) * 8] for i in range(args.prompts)]
    return compare(make, texts_by_name, prompts, args)


def main(argv=None):
    args = _parse_args(argv)
    if args.smoke:
        args.steps, args.prompts, args.greedy = 3, 2, 4
    print(header("bf16 and q8 quality against float32 (bench/quant_quality.py)"))
    train, held_out = texts()
    cols = ["weights", "MB read/token", "ppl held-out"]
    tail = ["KL mean", "KL max", "top-1 agree", "greedy identical", "greedy same prefix"]
    with LoadMeter() as meter:
        if args.model in ("qwen3", "all"):
            print("\nqwen3-0.6b-random" + (" (SMOKE: a tiny Qwen3)" if args.smoke else "")
                  + f": {args.tokens if not args.smoke else 64} held-out tokens")
            print(markdown_table(cols + tail, qwen3_random(args, held_out)))
        if args.model in ("verdict", "all"):
            print("\nverdict-trained")
            print(markdown_table(cols + ["ppl train"] + tail, verdict_trained(args, train, held_out)))
    print(f"\nbackground cores over the run: {meter.other / max(meter.wall, 1e-9):.2f}")


if __name__ == "__main__":
    main()
