"""Batched generation, and what one GRPO step costs on a CPU (issue 41; bench/README.md, "reasoning.py").

    python bench/reasoning.py --part generate            # tok/s one at a time vs batched, tiny and Qwen3-0.6B
    python bench/reasoning.py --part grpo                # one GRPO step of a Qwen3-0.6B-shaped model, by phase
    python bench/reasoning.py --smoke                    # tiny models only, both parts: the script runs

Models: the real Qwen3-0.6B configuration (QWEN3_CONFIG_0_6B: 28 blocks, the 151,936-row head
tied to the embedding) with random float32 weights, readied by `for_inference` as the CLI does,
and a tiny Qwen3 (2 blocks, emb 64) where per-call dispatch, not weight reads, dominates. The real
weights are not needed: a step's cost depends on token counts, not on weight values, and the
counts are fixed here (no end token is given, so every answer runs to its cap).

generate: B prompts of different lengths (eval-math's case: right-aligned in one cache) and n
samples of one prompt (rollouts: no padding), `--new-tokens` greedy tokens each, decoded
together (`generate_batched`) and one at a time (`generate_batched` on one prompt per call,
which is `generate`'s KV-cached loop). Paired: the two alternate `--repeats` times; medians.
tok/s = generated tokens / wall seconds, prefill included.

grpo: the work of one `train_rlvr_grpo` step at `--rollouts` 4 and a `--cap` of 256 new tokens,
after a `--prompt-tokens` prompt, temperature 0.8 and top-p 0.9 (the defaults), by phase: the
rollouts decoded together (sample_responses' call); one rollout alone, times the number of
rollouts (a step without batching runs them one after another, each the same work); the
log-probability forwards with the graph recorded (one per rollout, sequence_logprob_and_entropy
as compute_grpo_loss calls it); the backward of the GRPO loss (taken one rollout at a time, the
gradient accumulating: the same work as one backward of the summed loss, with one rollout's
graph in memory instead of all); the gradient clip and AdamW step (timed on a quarter of the
blocks and scaled by parameter count: see _adamw_seconds).
"background cores": other processes' CPU during the timed calls (a busy machine slows all).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import SRC, LoadMeter, header, markdown_table, median  # noqa: E402

sys.path.insert(0, SRC)

TINY = {"vocab_size": 512, "context_length": 1024, "emb_dim": 64, "n_heads": 4, "n_layers": 2,
        "hidden_dim": 128, "head_dim": 16, "qk_norm": True, "n_kv_groups": 2,
        "rope_base": 10_000.0, "tie_weights": True}


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("generate", "grpo", "both"), default="both")
    p.add_argument("--models", default="tiny,qwen3-0.6b", help="comma list of tiny, qwen3-0.6b")
    p.add_argument("--batch", type=int, default=4, help="prompts or samples decoded together")
    p.add_argument("--new-tokens", type=int, default=32, help="generate: tokens per answer")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rollouts", type=int, default=4, help="grpo: rollouts per step")
    p.add_argument("--cap", type=int, default=256, help="grpo: new tokens per rollout")
    p.add_argument("--prompt-tokens", type=int, default=100, help="grpo: prompt length")
    p.add_argument("--smoke", action="store_true", help="tiny model, short runs")
    args = p.parse_args(argv)
    if args.smoke:
        args.models, args.new_tokens, args.repeats, args.cap, args.prompt_tokens = "tiny", 6, 1, 8, 12
    return args


def build(name):
    import numpy as np
    import tinygpt as tg
    from tinygpt.model import QWEN3_CONFIG_0_6B, Qwen3Model, for_inference
    tg.manual_seed(0)
    cfg = {"tiny": TINY, "qwen3-0.6b": dict(QWEN3_CONFIG_0_6B, tie_weights=True)}[name]
    model = for_inference(Qwen3Model(cfg)).eval()
    assert model.out_head.weight.dtype == np.float32
    return model, cfg


def timed(meter, fn):
    meter.start()
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    meter.stop()
    return seconds, out


def bench_generate(name, args):
    """Rows: (case, one-at-a-time tok/s, batched tok/s, speed-up, background cores)."""
    import numpy as np
    from tinygpt.model import generate_batched
    model, cfg = build(name)
    rng = np.random.default_rng(0)
    lengths = [16 + 16 * i for i in range(args.batch)]                 # different lengths
    cases = {f"{args.batch} prompts ({lengths[0]}-{lengths[-1]} tokens)":
             [list(rng.integers(0, cfg["vocab_size"], n)) for n in lengths],
             f"{args.batch} samples of one 32-token prompt": [list(rng.integers(0, cfg["vocab_size"], 32))] * args.batch}
    rows = []
    for case, prompts in cases.items():
        meter, times = LoadMeter(), {"one": [], "batched": []}
        generate_batched(model, prompts[:2], 2)                        # warm the kernels
        for _ in range(args.repeats):
            seconds, one = timed(meter, lambda: [generate_batched(model, [p], args.new_tokens)[0]
                                                 for p in prompts])
            times["one"].append(seconds)
            seconds, together = timed(meter, lambda: generate_batched(model, prompts, args.new_tokens))
            times["batched"].append(seconds)
            assert together == one, "batched greedy output differs from one at a time"
        tokens = len(prompts) * args.new_tokens
        one_rate, batch_rate = tokens / median(times["one"]), tokens / median(times["batched"])
        rows.append((f"{name}: {case}", f"{one_rate:.1f}", f"{batch_rate:.1f}",
                     f"{batch_rate / one_rate:.2f}x", f"{meter.cores:.2f}"))
    return rows


def bench_grpo(name, args):
    """Rows: (phase, seconds) of one GRPO step's work."""
    import numpy as np
    import tinygpt as tg
    from tinygpt.model import generate_batched
    from tinygpt.reasoning.rl import compute_advantage_stats, sequence_logprob_and_entropy
    model, cfg = build(name)
    prompt = list(np.random.default_rng(1).integers(0, cfg["vocab_size"], args.prompt_tokens))
    meter, n = LoadMeter(), args.rollouts
    tg.manual_seed(2)
    sample = dict(temperature=0.8, top_p=0.9)
    generate_batched(model, [prompt] * 2, 2, **sample)                 # warm the kernels
    together, rollouts = timed(meter, lambda: generate_batched(model, [prompt] * n, args.cap, **sample))
    alone, _ = timed(meter, lambda: generate_batched(model, [prompt], args.cap, **sample))
    assert all(len(r) == args.cap for r in rollouts)
    ids = [np.asarray(prompt + r, dtype=np.int64) for r in rollouts]
    model.train()
    rewards = [float(i % 2) for i in range(n)]                        # a mixed group: a gradient
    advantages = compute_advantage_stats(rewards)[0]
    forward = backward = 0.0
    for i, a in zip(ids, advantages):  # one rollout's graph at a time: the gradient accumulates
        seconds, (logp, _) = timed(meter, lambda: sequence_logprob_and_entropy(model, i, len(prompt)))
        forward += seconds                                            # (the loss is a sum over
        backward += timed(meter, (logp * (-a / n)).backward)[0]      # rollouts: same gradient)
    update = _adamw_seconds(model, meter)
    return [(f"{name}: rollouts decoded together ({n} x {args.cap} tokens)", together),
            (f"{name}: rollouts one at a time ({n} x one rollout: {alone:.1f} s)", n * alone),
            (f"{name}: log-prob forwards with the graph ({n} x {len(ids[0])} tokens)", forward),
            (f"{name}: backward", backward), (f"{name}: clip + AdamW step (scaled, see docstring)", update),
            (f"{name}: step, rollouts together", together + forward + backward + update),
            (f"{name}: step, rollouts one at a time", n * alone + forward + backward + update),
            (f"{name}: background cores", meter.cores)]


def _adamw_seconds(model, meter):
    """The gradient clip and AdamW step over every parameter, timed on the first quarter of the
    blocks and scaled by parameter count (AdamW's two moments for all 0.6B parameters
    would take 4.8 GB more than this shared machine can spare; the step is a memory-bound pass
    linear in the count)."""
    from tinygpt.nn.utils import clip_grad_norm_
    from tinygpt.optim import AdamW
    params = [p for p in model.parameters() if p.grad is not None]
    blocks = model.trf_blocks[:max(1, len(model.trf_blocks) // 4)]
    part = [p for block in blocks for p in block.parameters() if p.grad is not None]
    optimizer = AdamW(part, lr=1e-5)
    optimizer.step()                                                   # allocate the moments
    seconds, _ = timed(meter, lambda: (clip_grad_norm_(part, 1.0), optimizer.step()))
    return seconds * sum(p.data.size for p in params) / sum(p.data.size for p in part)


def main(argv=None):
    args = _parse_args(argv)
    print(header("bench/reasoning.py"))
    models = args.models.split(",")
    if args.part in ("generate", "both"):
        rows = [row for name in models for row in bench_generate(name, args)]
        print(f"\n## Generation, {args.new_tokens} greedy tokens per answer (medians of {args.repeats})\n")
        print(markdown_table(["case", "one at a time tok/s", "batched tok/s", "speed-up",
                              "background cores"], rows))
    if args.part in ("grpo", "both"):
        rows = [row for name in models if name != "tiny" or args.smoke for row in bench_grpo(name, args)]
        print(f"\n## One GRPO step: {args.rollouts} rollouts, {args.cap}-token cap, "
              f"{args.prompt_tokens}-token prompt\n")
        print(markdown_table(["phase", "seconds"], [(p, f"{s:.2f}") for p, s in rows]))


if __name__ == "__main__":
    main()
