"""`train_rlvr_grpo`: GRPO over a list of math problems (the sequel's chapters 6-7), with a metrics
CSV (one row per step), checkpoints that resume, and a plot of the metrics.

Each step takes the next problem, snapshots the policy as the rollout ("old") policy when the
clipped ratio is on, and for `inner_epochs` times samples a group of rollouts, computes
`compute_grpo_loss`, backpropagates, clips the gradient norm to 1 and takes an AdamW step.
Checkpoints (`grpo-last.safetensors` in `out_dir`) hold the model, the optimizer, the step and
the random state, so `resume=True` continues exactly where the run stopped.

Chapter 7's extras, under the reference's names: `skip_zero_advantage_updates` skips the
backward and the optimizer step of a group whose rewards are all equal (every advantage 0: the
loss has no gradient, and AdamW's moments would still move the weights); the metrics' `skipped`
column says when. `eval_data` with `eval_every` K: every K steps the model answers those
held-out problems greedily (as `tinygpt eval-math`, into `out_dir`/eval-stepNNNNN.jsonl, which a
resumed run reuses) and the accuracy goes into the metrics' `eval_acc` column ("" elsewhere).

Rollouts are decoded together (sampling.sample_responses); on Qwen3/Llama 3 that readies the
model with `tinygpt.model.for_inference`, in place (model/batched.py)."""
import copy
import csv
import pathlib
import time

import numpy as np

from ..core.random import get_rng_state, manual_seed, set_rng_state
from ..errors import InputError
from ..files import atomic_write
from ..nn.utils import clip_grad_norm_
from ..optim import AdamW
from ..train.checkpoint import load_checkpoint, save_checkpoint
from .evaluate import evaluate_math_stream
from .rl import compute_advantage_stats, compute_grpo_loss, reward_rlvr
from .verifier import render_prompt

CHECKPOINT = "grpo-last.safetensors"
METRICS = "grpo-metrics.csv"
COLUMNS = ("step", "total_steps", "loss", "pg_loss", "kl_loss", "policy_ratio", "reward_avg",
           "accuracy", "avg_response_len", "entropy_avg", "adv_avg", "adv_std", "skipped", "eval_acc",
           "seconds")


def _frozen(model):
    snapshot = copy.deepcopy(model)
    snapshot.requires_grad_(False)
    return snapshot.eval()


def _row(step, steps, stats, answer, seconds, eval_acc=None) -> dict:
    """The metrics of one step (the last inner epoch's rollouts)."""
    rewards = stats["rewards"]
    _, adv_avg, adv_std = compute_advantage_stats(rewards)
    accuracy = np.mean([reward_rlvr(s["text"], answer) for s in stats["samples"]])
    ratio = stats["policy_ratio"]
    return {"step": step, "total_steps": steps, "loss": stats["loss"],
            "pg_loss": stats["pg_loss"], "kl_loss": stats["kl_loss"],
            "policy_ratio": "" if ratio is None else ratio, "reward_avg": float(np.mean(rewards)),
            "accuracy": float(accuracy),
            "avg_response_len": float(np.mean([s["gen_len"] for s in stats["samples"]])),
            "entropy_avg": float(np.mean(stats["entropies"])), "adv_avg": adv_avg,
            "adv_std": adv_std, "skipped": int(stats["loss_tensor"] is None),
            "eval_acc": "" if eval_acc is None else eval_acc, "seconds": round(seconds, 3)}


def _append_csv(path: pathlib.Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})


def read_metrics(path) -> list:
    """The rows of a metrics CSV as dicts of floats ("" -> None)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (float(v) if v != "" else None) for k, v in row.items()}
                for row in csv.DictReader(f)]


def train_rlvr_grpo(model, tokenizer, math_data, out_dir, steps=None, num_rollouts: int = 4,
                    max_new_tokens: int = 256, temperature: float = 0.8, top_p=0.9,
                    lr: float = 1e-5, clip_eps=None, inner_epochs: int = 1,
                    kl_coeff: float = 0.0, ref_model=None, format_reward: bool = False,
                    checkpoint_every: int = 50, resume: bool = False, seed: int = 123,
                    prompt_renderer=render_prompt, log=print,
                    skip_zero_advantage_updates: bool = False, eval_data=None,
                    eval_every: int = 0, eval_batch_size: int = 8) -> list:
    """Train `model` in place with GRPO on `math_data` (dicts with problem and answer), one
    problem per step in order, for `steps` steps (default: one pass). Writes `out_dir`/
    grpo-metrics.csv and grpo-last.safetensors (every `checkpoint_every` steps and at the end).
    `ref_model`: a frozen model for the KL term (default with kl_coeff: a copy of the starting
    model). `prompt_renderer(problem)` makes the prompt (default: chapter 3's render_prompt).
    `skip_zero_advantage_updates`, `eval_data`/`eval_every` (`eval_batch_size` problems
    answered together): see the module docstring. Returns the metrics rows of this run."""
    if not math_data:
        raise InputError("train_rlvr_grpo needs at least one problem")
    if eval_every and not eval_data:
        raise InputError("eval_every needs eval_data, the held-out problems to evaluate on")
    steps = len(math_data) if steps is None else steps
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    if kl_coeff and ref_model is None:
        ref_model = _frozen(model)
    start = 0
    if resume and (out / CHECKPOINT).is_file():
        state = load_checkpoint(out / CHECKPOINT, model, optimizer)
        start = state["step"]
        set_rng_state(state["rng"])
        log(f"resuming after step {start} from {out / CHECKPOINT}")
    else:
        manual_seed(seed)
        (out / METRICS).unlink(missing_ok=True)
    options = dict(num_rollouts=num_rollouts, max_new_tokens=max_new_tokens,
                   temperature=temperature, top_p=top_p, ref_model=ref_model, clip_eps=clip_eps,
                   kl_coeff=kl_coeff, format_reward=format_reward,
                   prompt_renderer=prompt_renderer, skip_zero_adv=skip_zero_advantage_updates)
    rows = []
    for step in range(start + 1, steps + 1):
        began = time.perf_counter()
        example = math_data[(step - 1) % len(math_data)]
        stats = _step(model, tokenizer, example, optimizer, inner_epochs, options)
        seconds = time.perf_counter() - began
        eval_acc = None
        if eval_every and step % eval_every == 0:
            eval_acc = evaluate_in_loop(model, tokenizer, eval_data, out / f"eval-step{step:05d}.jsonl",
                                        max_new_tokens, prompt_renderer, eval_batch_size)
            log(f"[step {step}/{steps}] held-out accuracy {eval_acc:.3f} ({len(eval_data)} problems)")
        row = _row(step, steps, stats, example["answer"], seconds, eval_acc)
        rows.append(row)
        _append_csv(out / METRICS, row)
        log(f"[step {step}/{steps}] loss {row['loss']:.4f} reward {row['reward_avg']:.3f} "
            f"accuracy {row['accuracy']:.3f} length {row['avg_response_len']:.1f} "
            f"entropy {row['entropy_avg']:.2f}" + (" (skipped: advantages 0)" if row["skipped"] else ""))
        if step % checkpoint_every == 0 or step == steps:
            save_checkpoint(out / CHECKPOINT, model, optimizer, step=step, rng=get_rng_state(),
                            kind="grpo")
    return rows


def _step(model, tokenizer, example, optimizer, inner_epochs, options) -> dict:
    """One GRPO step on `example`: `inner_epochs` times rollouts, loss, backward, clipped AdamW
    step (none for a skipped group). Returns the last inner epoch's stats."""
    # the rollout policy: a snapshot only when later inner epochs move the model away from it
    snapshot = options["clip_eps"] is not None and inner_epochs > 1
    old_model = _frozen(model) if snapshot else None
    for _ in range(inner_epochs):
        stats = compute_grpo_loss(model, tokenizer, example, old_model=old_model, **options)
        if stats["loss_tensor"] is None:                 # skipped: every advantage is 0
            continue
        optimizer.zero_grad()
        stats["loss_tensor"].backward()
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return stats


class _EvalModel:
    """What evaluate_math_stream reads (evaluate.py), from a model and GRPO's tokenizer."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer, self.prompt_ids = model, tokenizer, tokenizer.encode
        eos = getattr(tokenizer, "eos_token_id", None)
        self.stop_ids = () if eos is None else (eos,)
        self.context_length = model.cfg["context_length"]


def evaluate_in_loop(model, tokenizer, eval_data, path, max_new_tokens: int,
                     prompt_renderer=render_prompt, batch_size: int = 8) -> float:
    """Greedy accuracy of `model` on `eval_data` (problem/answer dicts; an id each, else its
    index), graded as eval-math grades, one JSON line per problem in `path` (resumed if there).
    The model's train/eval mode is restored."""
    rows = [{**row, "id": str(row.get("id", i))} for i, row in enumerate(eval_data)]
    was_training = model.training
    model.eval()
    try:
        result = evaluate_math_stream(_EvalModel(model, tokenizer), rows, path, max_new_tokens,
                                      batch_size=batch_size, prompt_renderer=prompt_renderer)
    finally:
        model.train(was_training)
    return result["accuracy"]


def held_out(pool, train_data, steps, n: int) -> list:
    """The last `n` problems of `pool` whose text none of the first `steps` training problems
    (train_data, cycled as train_rlvr_grpo cycles it) has: problems to evaluate on."""
    seen = {row["problem"] for row in train_data[:steps]}
    fresh = [row for row in pool if row["problem"] not in seen]
    if not fresh:
        raise InputError("no held-out problems: every evaluation problem is among the training "
                         "problems; give other evaluation data")
    return fresh[-n:]


def plot_grpo_metrics(csv_path, path, columns=("reward_avg", "accuracy", "entropy_avg",
                                               "avg_response_len", "eval_acc")):
    """The metrics CSV's columns against the step, one panel each (the raw values and a trailing
    moving average; eval_acc, written every K steps, as points), saved at `path`; a column
    without values (eval_acc of a run without evaluation) gets no panel. The loss is not among
    the defaults: under the clipped ratio with rollouts drawn from the policy itself every ratio
    is 1, so the loss's value is -mean(advantage) = 0 at every step (its gradient is not)."""
    from ..train.plotting import _figure
    rows = read_metrics(csv_path)
    columns = [name for name in columns if any(r.get(name) is not None for r in rows)]
    fig = _figure(figsize=(7, 4.5))
    axes = fig.subplots(2, max(1, (len(columns) + 1) // 2), sharex=True).ravel()
    steps = np.array([r["step"] for r in rows])
    for ax, name in zip(axes, columns):
        values = np.array([np.nan if r.get(name) is None else r[name] for r in rows])
        if name == "eval_acc":
            ax.plot(steps[~np.isnan(values)], values[~np.isnan(values)], "o-")
        else:
            ax.plot(steps, values, alpha=0.4)
            window = max(1, len(values) // 4)  # a trailing moving average shows the trend
            ax.plot(steps, [np.nanmean(values[max(0, i - window + 1):i + 1])
                            for i in range(len(values))])
        ax.set_ylabel(name)
        ax.set_xlabel("step")
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    fig.tight_layout()
    path = pathlib.Path(path)
    with atomic_write(path, "wb", sync=False) as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png")
    return path
