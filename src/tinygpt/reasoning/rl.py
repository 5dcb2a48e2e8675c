"""Reinforcement learning with verifiable rewards (the sequel's chapters 6 and 7): GRPO.

For one problem the policy writes `num_rollouts` answers (rollouts); each earns a reward the
verifier checks (reward_rlvr: 1.0 for a correct \\boxed{} answer; optionally + reward_format for
<think>...</think>); the group-relative advantage of a rollout is its reward standardised over
its group; the loss pushes up the log-probability of rollouts with positive advantage.

  sequence_logprob(model, ids, prompt_len)     sum of log p(response tokens), differentiable
  compute_advantage_stats(rewards)             (advantages, their mean, their std)
  grpo_objective(new_logps, old_logps, ...)    the loss from fixed rollouts: chapter 6's
                                               -mean(A * logp), or chapter 7's clipped ratio
                                               against the rollout policy, + KL to a reference
  compute_grpo_loss(model, tokenizer, example) rollouts, rewards, and that loss

Chapter 7's clipped objective, as the reference writes it: ratio = exp(logp_new - logp_old) per
rollout (sequence level), and the objective takes min(ratio * A, clip(ratio) * A) for A >= 0 but
max(...) for A < 0 (PPO takes the min for both signs). The KL term is
kl_coeff * mean(logp_new - logp_ref), the sequence-level estimate the reference uses."""
import numpy as np

from ..core.autograd import no_grad
from ..core.tensor import Tensor
from ..errors import InputError
from ..ops import stack, where
from .sampling import sample_responses
from .verifier import extract_final_candidate, grade_answer, render_prompt

THINK_TOKEN_ID, END_THINK_TOKEN_ID = 151667, 151668  # Qwen3's <think> and </think>
ADVANTAGE_EPS = 1e-4  # added to the rewards' std: a group with equal rewards has advantages 0


def reward_rlvr(answer_text: str, ground_truth: str) -> float:
    """1.0 when the answer's last \\boxed{} grades equal to `ground_truth`, else 0.0 (no box: 0.0)."""
    extracted = extract_final_candidate(answer_text, fallback=None)
    return float(grade_answer(extracted, ground_truth)) if extracted else 0.0


def reward_format(token_ids, prompt_len: int, start_think_id: int = THINK_TOKEN_ID,
                  end_think_id: int = END_THINK_TOKEN_ID) -> float:
    """1.0 when the response (token_ids[prompt_len:]) opens <think> before its first </think>."""
    response = [int(t) for t in np.asarray(token_ids)[prompt_len:]]
    if start_think_id not in response or end_think_id not in response:
        return 0.0
    return float(response.index(start_think_id) < response.index(end_think_id))


def _answer_logprobs(model, token_ids, prompt_len: int):
    """(log-softmax at the positions predicting the response (m, vocab), the response ids (m,))."""
    ids = np.asarray(token_ids, dtype=np.int64)
    if ids.ndim != 1 or not 1 <= prompt_len <= len(ids):
        raise InputError(f"token_ids must be one sequence (1-D) holding the prompt's "
                         f"{prompt_len} tokens, got shape {ids.shape}")
    logits = model(Tensor(ids[None, :]))[0]                    # (T, vocab)
    logprobs = logits[prompt_len - 1:len(ids) - 1].log_softmax(dim=-1)  # (m, vocab)
    return logprobs, ids[prompt_len:]


def sequence_logprob(model, token_ids, prompt_len: int) -> Tensor:
    """log p(response | prompt) = the sum over the response tokens token_ids[prompt_len:] of
    log-softmax(logits)[position before, token]; a scalar Tensor that backpropagates."""
    logprobs, targets = _answer_logprobs(model, token_ids, prompt_len)
    return logprobs[np.arange(len(targets)), targets].sum()  # ()


def sequence_logprob_and_entropy(model, token_ids, prompt_len: int):
    """(sequence_logprob, the mean over response steps of the entropy of the next-token
    distribution, as a float; 0.0 for an empty response)."""
    logprobs, targets = _answer_logprobs(model, token_ids, prompt_len)
    logp = logprobs[np.arange(len(targets)), targets].sum()   # ()
    if len(targets) == 0:
        return logp, 0.0
    lp = logprobs.data.astype(np.float64)                     # (m, vocab)
    return logp, float(-(np.exp(lp) * lp).sum(axis=-1).mean())


def compute_advantage_stats(rewards_list):
    """(advantages = (r - mean(r)) / (std(r) + 1e-4) as float32 (std with n - 1, as torch's),
    their mean, their std). Needs at least two rewards."""
    rewards = np.asarray(rewards_list, dtype=np.float32)
    if rewards.ndim != 1 or len(rewards) < 2:
        raise InputError(f"advantages need a group of at least 2 rewards, got {rewards.shape}")
    advantages = ((rewards - rewards.mean()) / (rewards.std(ddof=1) + np.float32(ADVANTAGE_EPS)))
    advantages = advantages.astype(np.float32)
    return advantages, float(advantages.mean()), float(advantages.std(ddof=1))


def grpo_objective(new_logps, rewards, old_logps=None, ref_logps=None, clip_eps=None,
                   kl_coeff: float = 0.0) -> dict:
    """The GRPO loss of one group of rollouts. new_logps: a (n,) Tensor (stacked
    sequence_logprob); rewards (n,); old_logps (n,), the rollout policy's, needed for
    `clip_eps`; ref_logps (n,), a frozen reference's, needed for `kl_coeff`.
    Without clip_eps: pg_loss = -mean(A * new_logps) (chapter 6). With it:
    -mean(objective) on ratio = exp(new - old), see the module docstring.
    Returns loss (Tensor), pg_loss, kl_loss, policy_ratio (floats) and advantages."""
    advantages, _, _ = compute_advantage_stats(rewards)
    adv = advantages.astype(new_logps.dtype)                  # (n,)
    if clip_eps is None:
        pg_loss, ratio_mean = -(new_logps * adv).mean(), None
    else:
        if old_logps is None:
            raise InputError("the clipped ratio needs old_logps, the rollout policy's")
        ratio = (new_logps - np.asarray(old_logps, dtype=adv.dtype)).exp()  # (n,)
        r = ratio.data
        clipped = np.clip(r, 1.0 - clip_eps, 1.0 + clip_eps) * adv          # (n,) constant
        unclipped = r * adv
        # the unclipped term wins where it is the min (A >= 0) or max (A < 0); where the
        # clipped term wins the ratio is outside the band and that rollout gets no gradient
        keep = np.where(adv >= 0, unclipped <= clipped, unclipped >= clipped)
        objective = where(keep, ratio * adv, Tensor(clipped))              # (n,)
        pg_loss, ratio_mean = -objective.mean(), float(r.mean())
    loss, kl_loss = pg_loss, 0.0
    if kl_coeff:
        if ref_logps is None:
            raise InputError("kl_coeff needs ref_logps, the frozen reference model's")
        kl = (new_logps - np.asarray(ref_logps, dtype=adv.dtype)).mean() * kl_coeff
        loss, kl_loss = pg_loss + kl, float(kl.data)
    return {"loss_tensor": loss, "loss": float(loss.data), "pg_loss": float(pg_loss.data),
            "kl_loss": kl_loss, "policy_ratio": ratio_mean, "advantages": advantages.tolist()}


def _rollouts(model, tokenizer, example, num_rollouts, max_new_tokens, temperature, top_p,
              format_reward, prompt_renderer):
    """(token ids, prompt lengths, rewards, samples) of `num_rollouts` answers to `example`,
    decoded together (sample_responses: Qwen3/Llama 3; one at a time on GPT-2)."""
    prompt = prompt_renderer(example["problem"])
    all_ids, lens, rewards, samples = [], [], [], []
    for ids, prompt_len, text in sample_responses(model, tokenizer, prompt, num_rollouts,
                                                  max_new_tokens, temperature, top_p):
        reward = reward_rlvr(text, example["answer"])
        if format_reward:
            reward += reward_format(ids, prompt_len)
        all_ids.append(ids)
        lens.append(prompt_len)
        rewards.append(reward)
        samples.append({"text": text, "reward": reward, "gen_len": len(ids) - prompt_len})
    return all_ids, lens, rewards, samples


def _zero_advantage_stats(old, ids, lens, rewards, samples, advantages) -> dict:
    """compute_grpo_loss's answer for a skipped group: no loss to backpropagate (call under
    no_grad; the entropies are the rollout policy's)."""
    entropies = [sequence_logprob_and_entropy(old, i, n)[1] for i, n in zip(ids, lens)]
    return {"loss_tensor": None, "loss": 0.0, "pg_loss": 0.0, "kl_loss": 0.0,
            "policy_ratio": None, "advantages": advantages.tolist(), "rewards": rewards,
            "entropies": entropies, "samples": samples, "is_zero_adv": True}


def compute_grpo_loss(model, tokenizer, example, num_rollouts: int = 2,
                      max_new_tokens: int = 256, temperature: float = 0.8, top_p: float = 0.9,
                      old_model=None, ref_model=None, clip_eps=None, kl_coeff: float = 0.0,
                      format_reward: bool = False, prompt_renderer=render_prompt,
                      skip_zero_adv: bool = False) -> dict:
    """Sample `num_rollouts` answers to prompt_renderer(example["problem"]) with `old_model`
    (default: `model`, in eval mode), reward them against example["answer"], and return
    `grpo_objective`'s dict with rewards, entropies (the rollout policy's), samples (text,
    reward, gen_len) and is_zero_adv. Without `old_model` the log-probabilities are taken once,
    in eval mode (as chapter 6 does), and serve as both the rollout policy's and the model's.
    `skip_zero_adv` (the reference's chapter-7 option): when every advantage is 0 (all rewards
    equal, so the loss has no gradient) no graph is built: loss_tensor is None, the losses 0.0
    and the entropies come from a forward without gradient."""
    if num_rollouts < 2:
        raise InputError(f"GRPO compares rollouts within a group: num_rollouts must be >= 2, "
                         f"got {num_rollouts}")
    old = model if old_model is None else old_model
    was_training = model.training
    model.eval()
    old.eval()
    with no_grad():
        ids, lens, rewards, samples = _rollouts(old, tokenizer, example, num_rollouts,
                                                max_new_tokens, temperature, top_p, format_reward,
                                                prompt_renderer)
        advantages = compute_advantage_stats(rewards)[0]
        if skip_zero_adv and np.allclose(advantages, 0.0, rtol=0.0, atol=1e-8):
            model.train(was_training)
            return _zero_advantage_stats(old, ids, lens, rewards, samples, advantages)
        old_stats = ([sequence_logprob_and_entropy(old, i, n) for i, n in zip(ids, lens)]
                     if old_model is not None else None)
        ref_logps = ([float(sequence_logprob(ref_model, i, n).data) for i, n in zip(ids, lens)]
                     if kl_coeff else None)
    if old_model is None:  # the rollout policy is the model: one forward (eval mode) gives both
        old_stats = [sequence_logprob_and_entropy(model, i, n) for i, n in zip(ids, lens)]
        new_logps = stack([lp for lp, _ in old_stats])                        # (n,)
        model.train(was_training)
    else:
        model.train(was_training)
        new_logps = stack([sequence_logprob(model, i, n) for i, n in zip(ids, lens)])  # (n,)
    stats = grpo_objective(new_logps, rewards, [float(lp.data) for lp, _ in old_stats],
                           ref_logps, clip_eps, kl_coeff)
    return {**stats, "rewards": rewards, "entropies": [e for _, e in old_stats],
            "samples": samples, "is_zero_adv": False}
