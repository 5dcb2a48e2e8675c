"""Direct preference optimization, DPO (the book's chapter-7 bonus, `dpo-from-scratch.ipynb`;
Rafailov et al. 2023, "Your Language Model is Secretly a Reward Model").

After instruction fine-tuning, the model (the *policy*) learns to prefer one response over
another for the same prompt (here: the politer one) without a separate reward model. A frozen
copy of the starting model, the *reference*, anchors it:

    loss = -logsigmoid(beta * ((log p(chosen) - log p(rejected))          # policy
                              - (log p_ref(chosen) - log p_ref(rejected))))  # reference

where log p is a response's log-probability given its prompt (`compute_logprobs`: the mean over
the response tokens, as the notebook computes it; `reduction="sum"` gives the paper's sum).
At the start policy == reference, so the loss is ln 2 = 0.6931 and both rewards are 0.

    train_data, test_data, val_data = split_instruction_data(load_preference_data(path))
    loader = DataLoader(PreferenceDataset(train_data), 8, shuffle=True, drop_last=True,
                        collate_fn=partial(dpo_collate_fn, allowed_max_length=1024), seed=123)
    reference_model = frozen_copy(policy_model)
    tracking = train_model_dpo_simple(policy_model, reference_model, loader, val_loader,
                                      optimizer, num_epochs=1, beta=0.1, eval_freq=5, eval_iter=5)

The whole run (model, LoRA, loaders, before/after responses, plots) is `dpo_train.run_dpo`.
"""
import copy
import math
import pathlib
import time

import numpy as np

from ..core.autograd import no_grad
from ..core.tensor import Tensor, as_tensor
from ..errors import InputError
from ..nn import functional as F
from ..train import generate_and_print_sample, plot_values
from ..train.guard import check_finite_loss
from ..train.loop import check_counts
from ..train.progress import Progress
from .dpo_data import (PreferenceDataset, check_preference_entries, dpo_collate_fn,
                       load_preference_data, usable_entries)

__all__ = ["PreferenceDataset", "check_preference_entries", "dpo_collate_fn",
           "load_preference_data", "usable_entries", "compute_logprobs", "compute_dpo_loss",
           "compute_dpo_loss_batch", "compute_dpo_loss_loader", "evaluate_dpo_loss_loader",
           "train_model_dpo_simple", "frozen_copy", "check_same_config", "plot_dpo"]


# --- the loss -----------------------------------------------------------------------------------

def compute_logprobs(logits, labels, selection_mask=None, reduction: str = "mean"):
    """Per sequence, the log-probability the model gives the label tokens, differentiable.

    logits (b, T, V) predict the next token, so position t is scored on labels[:, t + 1]: the
    log-softmax of logits[:, :-1] at labels[:, 1:]. With `selection_mask` (b, T) only positions
    whose mask[:, 1:] is True count (the response tokens, see `dpo_collate_fn`). `reduction`:
    "mean" over the counted tokens (the notebook), or "sum" (the DPO paper). Returns (b,)."""
    if reduction not in ("mean", "sum"):
        raise InputError(f"compute_logprobs: reduction must be 'mean' or 'sum', got {reduction!r}")
    logits = as_tensor(logits)
    labels = np.asarray(labels.data if isinstance(labels, Tensor) else labels)
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise InputError(f"compute_logprobs: logits (batch, tokens, vocab) and labels (batch, "
                         f"tokens) do not fit: {logits.shape} and {labels.shape}")
    b, T = labels.shape
    log_probs = F.log_softmax(logits, dim=-1)                                    # (b, T, V)
    rows, positions = np.arange(b)[:, None], np.arange(T - 1)[None, :]
    selected_log_probs = log_probs[rows, positions, labels[:, 1:]]              # (b, T-1)
    if selection_mask is None:
        return selected_log_probs.mean(dim=-1) if reduction == "mean" else selected_log_probs.sum(dim=-1)
    mask = np.asarray(selection_mask.data if isinstance(selection_mask, Tensor) else selection_mask)
    if mask.shape != labels.shape:
        raise InputError(f"compute_logprobs: selection_mask shape {mask.shape} != labels shape "
                         f"{labels.shape}")
    mask = mask[:, 1:].astype(logits.dtype)                                      # (b, T-1)
    counts = mask.sum(axis=-1)                                                    # (b,)
    if reduction == "mean" and not counts.all():
        raise InputError(f"compute_logprobs: selection_mask selects no token after the first in "
                         f"row(s) {np.flatnonzero(counts == 0).tolist()}: nothing to average")
    summed = (selected_log_probs * mask).sum(dim=-1)                             # (b,)
    return summed / counts if reduction == "mean" else summed


def check_beta(beta) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)) \
            or not math.isfinite(beta) or beta <= 0:
        raise InputError(f"DPO beta must be a finite number > 0, got {beta!r}")
    return float(beta)


def compute_dpo_loss(model_chosen_logprobs, model_rejected_logprobs, reference_chosen_logprobs,
                     reference_rejected_logprobs, beta: float = 0.1):
    """The DPO loss (the paper's equation 7), averaged over the batch, and the mean rewards the
    notebook tracks: log p(response) - log p_ref(response) for chosen and for rejected
    (detached, without beta). Returns (loss, chosen_rewards, rejected_rewards), scalars."""
    beta = check_beta(beta)
    pc, pr = as_tensor(model_chosen_logprobs), as_tensor(model_rejected_logprobs)
    rc, rr = as_tensor(reference_chosen_logprobs), as_tensor(reference_rejected_logprobs)
    model_logratios = pc - pr
    reference_logratios = rc - rr
    logits = model_logratios - reference_logratios
    losses = -F.logsigmoid(logits * beta)
    chosen_rewards = (pc - rc).detach()
    rejected_rewards = (pr - rr).detach()
    return losses.mean(), chosen_rewards.mean(), rejected_rewards.mean()


def compute_dpo_loss_batch(batch, policy_model, reference_model, beta: float):
    """compute_dpo_loss on one dpo_collate_fn batch; the reference runs without a graph."""
    policy_chosen_log_probas = compute_logprobs(policy_model(batch["chosen"]), batch["chosen"],
                                                batch["chosen_mask"])
    policy_rejected_log_probas = compute_logprobs(policy_model(batch["rejected"]), batch["rejected"],
                                                  batch["rejected_mask"])
    with no_grad():
        ref_chosen_log_probas = compute_logprobs(reference_model(batch["chosen"]), batch["chosen"],
                                                 batch["chosen_mask"])
        ref_rejected_log_probas = compute_logprobs(reference_model(batch["rejected"]),
                                                   batch["rejected"], batch["rejected_mask"])
    return compute_dpo_loss(policy_chosen_log_probas, policy_rejected_log_probas,
                            ref_chosen_log_probas, ref_rejected_log_probas, beta)


def compute_dpo_loss_loader(data_loader, policy_model, reference_model, beta: float,
                            num_batches=None):
    """Mean (loss, chosen reward, rejected reward) over the first `num_batches` batches (all by
    default), computed without a graph; NaNs for an empty loader."""
    if len(data_loader) == 0:
        return float("nan"), float("nan"), float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    totals = np.zeros(3)
    with no_grad():
        for i, batch in enumerate(data_loader):
            if i >= num_batches:
                break
            totals += [t.item() for t in compute_dpo_loss_batch(batch, policy_model,
                                                                 reference_model, beta)]
    total_loss, total_chosen_rewards, total_rejected_rewards = (totals / num_batches).tolist()
    return total_loss, total_chosen_rewards, total_rejected_rewards


def evaluate_dpo_loss_loader(policy_model, reference_model, train_loader, val_loader, beta: float,
                             eval_iter: int) -> dict:
    """Loss and rewards on the first `eval_iter` batches of each loader, the policy in eval mode
    (put back in training mode afterwards, even when interrupted)."""
    policy_model.eval()
    try:
        train = compute_dpo_loss_loader(train_loader, policy_model, reference_model, beta, eval_iter)
        val = compute_dpo_loss_loader(val_loader, policy_model, reference_model, beta, eval_iter)
    finally:
        policy_model.train()
    return {"train_loss": train[0], "train_chosen_reward": train[1], "train_rejected_reward": train[2],
            "val_loss": val[0], "val_chosen_reward": val[1], "val_rejected_reward": val[2]}


# --- the reference model ------------------------------------------------------------------------

def frozen_copy(model):
    """A deep copy of `model` that never trains: every parameter requires no gradient (so no
    graph is recorded through it) and it is in eval mode. Use it as the DPO reference."""
    reference = copy.deepcopy(model)
    reference.requires_grad_(False)
    reference.eval()
    return reference


def check_same_config(policy_model, reference_model) -> None:
    """Refuse a policy and reference that are different models (their configs differ)."""
    a, b = getattr(policy_model, "cfg", None) or {}, getattr(reference_model, "cfg", None) or {}
    differences = [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b))
                   if a.get(k) != b.get(k)]
    if differences:
        raise InputError(f"the policy and reference models have different configs (policy vs "
                         f"reference: {', '.join(differences)}); the reference must be a frozen "
                         "copy of the policy's starting model")
    if reference_model.training or any(p.requires_grad for p in reference_model.parameters()):
        raise InputError("the reference model must be frozen: eval mode and no parameter that "
                         "requires a gradient (use tinygpt.finetune.dpo.frozen_copy)")


# --- training -----------------------------------------------------------------------------------

def train_model_dpo_simple(policy_model, reference_model, train_loader, val_loader, optimizer,
                           num_epochs, beta, eval_freq, eval_iter, start_context=None,
                           tokenizer=None, write=None, progress=None) -> dict:
    """The notebook's loop: a DPO step per batch, an evaluation every `eval_freq` steps (first
    at step 0) printed as one line with the reward margins (chosen - rejected reward), and a
    greedy sample of `start_context` after each epoch. `progress`: "bar", "lines", "none" or
    None (a bar on a terminal, else a plain line on stderr every 1/20 of the run: a DPO step
    takes seconds, evaluations come minutes apart); `write` prints the evaluations (default:
    through the progress display). A non-finite loss stops the run with a TrainingError naming
    the step. Returns the tracking dict: train/val losses, chosen and rejected rewards, and
    tokens seen, one entry per evaluation."""
    beta = check_beta(beta)
    check_same_config(policy_model, reference_model)
    check_counts(num_epochs=num_epochs, eval_freq=eval_freq, eval_iter=eval_iter)
    if len(train_loader) == 0:
        raise InputError("the DPO training loader yields no batch: nothing would train")
    tracking = {"train_losses": [], "train_chosen_rewards": [], "train_rejected_rewards": [],
                "val_losses": [], "val_chosen_rewards": [], "val_rejected_rewards": [],
                "tokens_seen": []}
    tokens_seen, global_step = 0, -1
    bar = Progress(num_epochs * len(train_loader), mode=progress, desc="dpo")
    write = write or bar.write
    start = time.perf_counter()
    try:
        for epoch in range(num_epochs):
            policy_model.train()
            for batch in train_loader:
                optimizer.zero_grad()
                loss, _, _ = compute_dpo_loss_batch(batch, policy_model, reference_model, beta)
                loss_value = check_finite_loss(loss, global_step + 1, "DPO training")
                loss.backward()
                optimizer.step()
                tokens_seen += batch["chosen"].size
                global_step += 1
                bar.step(loss_value, optimizer.param_groups[0]["lr"],
                         tokens_seen / (time.perf_counter() - start))
                if global_step % eval_freq == 0:
                    res = evaluate_dpo_loss_loader(policy_model, reference_model, train_loader,
                                                   val_loader, beta, eval_iter)
                    check_finite_loss(res["train_loss"], global_step, "DPO training (evaluated)")
                    track_evaluation(tracking, res, tokens_seen)
                    train_reward_margin = res["train_chosen_reward"] - res["train_rejected_reward"]
                    val_reward_margin = res["val_chosen_reward"] - res["val_rejected_reward"]
                    write(f"Ep {epoch + 1} (Step {global_step:06d}): "
                          f"Train loss {res['train_loss']:.3f}, Val loss {res['val_loss']:.3f}, "
                          f"Train reward margins {train_reward_margin:.3f}, "
                          f"Val reward margins {val_reward_margin:.3f}")
            if start_context is not None and tokenizer is not None:
                generate_and_print_sample(policy_model, tokenizer, start_context, write=write)
    finally:
        bar.close()
    return tracking


def track_evaluation(tracking, res, tokens_seen) -> None:
    """Append one evaluation (`evaluate_dpo_loss_loader`'s dict) to the tracking lists."""
    for split in ("train", "val"):
        tracking[f"{split}_losses"].append(res[f"{split}_loss"])
        tracking[f"{split}_chosen_rewards"].append(res[f"{split}_chosen_reward"])
        tracking[f"{split}_rejected_rewards"].append(res[f"{split}_rejected_reward"])
    tracking["tokens_seen"].append(tokens_seen)


def reward_margins(tracking, split: str) -> list:
    return [c - r for c, r in zip(tracking[f"{split}_chosen_rewards"],
                                  tracking[f"{split}_rejected_rewards"])]


def plot_dpo(tracking, num_epochs, out_dir) -> dict:
    """The notebook's two plots against epochs and tokens seen: the DPO losses
    (dpo-loss-plot.png) and the reward margins (dpo-reward-margins-plot.png). Returns the paths."""
    out_dir = pathlib.Path(out_dir)
    epochs_seen = np.linspace(0, num_epochs, len(tracking["train_losses"])).tolist()
    loss_path = plot_values(epochs_seen, tracking["tokens_seen"], tracking["train_losses"],
                            tracking["val_losses"], out_dir / "dpo-loss-plot.png", label="loss")
    margins_path = plot_values(epochs_seen, tracking["tokens_seen"], reward_margins(tracking, "train"),
                               reward_margins(tracking, "val"), out_dir / "dpo-reward-margins-plot.png",
                               label="reward margins")
    return {"loss_plot": loss_path, "reward_margins_plot": margins_path}
