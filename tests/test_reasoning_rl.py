"""RL with verifiable rewards (tinygpt.reasoning.rl): rewards, sequence log-probabilities and their
gradients, advantages and the GRPO loss, against the reference package and a PyTorch
transcription of the sequel's chapter-7 loss, on a tiny Qwen3 whose weights the book's PyTorch
Qwen3Model also holds (torch is test-only)."""
import numpy as np
import pytest
import torch

import tinygpt as tg
from helpers import assert_close, tolerance
from modern_models import TINY_QWEN3, randomize_norms
from tinygpt.model import Qwen3Model
from tinygpt.reasoning.rl import (compute_advantage_stats, compute_grpo_loss, grpo_objective,
                                  reward_format, reward_rlvr, sequence_logprob,
                                  sequence_logprob_and_entropy)

pytest.importorskip("sympy")
book = pytest.importorskip("llms_from_scratch.qwen3", reason="the book's package: pip install "
                           "--no-deps llms-from-scratch")
ROLLOUTS = [(np.array([3, 9, 4, 1, 7, 22, 5, 8]), 3), (np.array([3, 9, 4, 11, 2]), 3),
            (np.array([5, 6, 30, 31, 32, 33, 12]), 2), (np.array([3, 9, 4, 1]), 4)]
REWARDS = [1.0, 0.0, 1.0, 0.0]


def close(ours, theirs, what):
    """float32 results of a whole (tiny) model, judged as the model tests judge them."""
    assert_close(ours, theirs, what=what, tol=tolerance("model", np.float32))


def reference(name):
    return pytest.importorskip(f"reasoning_from_scratch.{name}", reason="reasoning-from-scratch "
                               "is not installed: pip install --no-deps reasoning-from-scratch")


@pytest.fixture(scope="module")
def twins():
    tg.manual_seed(1)
    ours = randomize_norms(Qwen3Model(TINY_QWEN3), 1)
    theirs = book.Qwen3Model({**TINY_QWEN3, "dtype": torch.float32})
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    return ours, theirs


def grads_of(loss, ours, theirs):
    ours.zero_grad()
    theirs.zero_grad()
    loss[0].backward()
    loss[1].backward()
    for name, p in ours.named_parameters():
        t = dict(theirs.named_parameters())[name].grad
        t = np.zeros_like(p.data) if t is None else t.numpy()
        g = np.zeros_like(p.data) if p.grad is None else p.grad
        close(g, t, f"grad {name}")


def test_rewards_match_the_reference():
    ch06, ch07 = reference("ch06"), reference("ch07")
    for text, gt in [(r"so \boxed{\dfrac{1}{2}}", "0.5"), ("the answer is 0.5", "0.5"),
                     (r"\boxed{3} then \boxed{4}", "3"), (r"\boxed{4}", "4"), ("", "1"),
                     (r"\boxed{}", "")]:
        assert reward_rlvr(text, gt) == ch06.reward_rlvr(text, gt), text
    for gen in ([151667, 5, 151668, 7], [151668, 151667, 151668], [5, 6], [151667], []):
        ids = [1, 2] + gen
        assert reward_format(ids, 2) == ch07.reward_format(torch.tensor(ids), 2), gen
    assert reward_format([1, 151667, 151668], 1) == 1.0 and reward_format([151667, 151668], 1) == 0.0


def test_sequence_logprob_and_its_gradient_match_the_reference(twins):
    ch06, ch07 = reference("ch06"), reference("ch07")
    ours, theirs = twins
    for ids, prompt_len in ROLLOUTS:
        mine = sequence_logprob(ours, ids, prompt_len)
        their = ch06.sequence_logprob(theirs, torch.from_numpy(ids), prompt_len)
        assert mine.shape == () and mine.dtype == np.float32
        close(mine.data, their.detach().numpy(), "logprob")
        grads_of((mine, their), ours, theirs)
        logp, entropy = sequence_logprob_and_entropy(ours, ids, prompt_len)
        t_logp, t_entropy = ch07.sequence_logprob_and_entropy(theirs, torch.from_numpy(ids),
                                                              prompt_len)
        close(logp.data, t_logp.detach().numpy(), "logprob")
        assert entropy == pytest.approx(t_entropy.item(), rel=1e-5, abs=1e-6)


def test_advantage_stats_match_the_reference():
    ch07 = reference("ch07")
    for rewards in ([1.0, 0.0, 1.0, 0.0], [1.0, 1.0], [0.0, 0.0, 2.0], [0.5, 1.0, 0.0, 1.0, 1.0]):
        adv, avg, std = compute_advantage_stats(rewards)
        t_adv, t_avg, t_std = ch07.compute_advantage_stats(rewards)
        np.testing.assert_allclose(adv, t_adv.numpy(), rtol=1e-6, atol=1e-7)
        assert adv.dtype == np.float32
        assert avg == pytest.approx(t_avg, abs=1e-6) and std == pytest.approx(t_std, rel=1e-5)


def torch_grpo(new_logps, rewards, old_logps, ref_logps, clip_eps, kl_coeff):
    """The chapter-6 loss and the chapter-7 clipped/KL loss, transcribed in PyTorch."""
    rewards = torch.tensor(rewards)
    adv = ((rewards - rewards.mean()) / (rewards.std() + 1e-4)).detach()
    if clip_eps is None:
        pg_loss = -(adv * new_logps).mean()
    else:
        ratio = torch.exp(new_logps - torch.tensor(old_logps))
        unclipped, clipped = ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv
        pg_loss = -torch.where(adv >= 0, torch.minimum(unclipped, clipped),
                               torch.maximum(unclipped, clipped)).mean()
    kl = kl_coeff * torch.mean(new_logps - torch.tensor(ref_logps)) if kl_coeff else 0.0
    return pg_loss + kl


@pytest.mark.parametrize("clip_eps, kl_coeff", [(None, 0.0), (0.2, 0.0), (0.2, 0.05),
                                                (None, 0.05), (10.0, 0.001)])
def test_grpo_loss_matches_a_torch_transcription(twins, clip_eps, kl_coeff):
    ours, theirs = twins
    mine = tg.stack([sequence_logprob(ours, ids, n) for ids, n in ROLLOUTS])
    their = torch.stack([reference("ch06").sequence_logprob(theirs, torch.from_numpy(ids), n)
                         for ids, n in ROLLOUTS])
    values = mine.data.astype(np.float64)
    # advantages +, -, +, -; ratios exp(0.5), exp(0.4), exp(-0.5), exp(-0.5): above a 0.2 band
    # (clipped for both signs), below it (unclipped for both); inside the band with eps 10
    old = (values - np.array([0.5, 0.4, -0.5, -0.5])).astype(np.float32).tolist()
    ref = (values + np.array([0.3, -0.2, 0.1, 0.4])).astype(np.float32).tolist()
    stats = grpo_objective(mine, REWARDS, old, ref, clip_eps, kl_coeff)
    expected = torch_grpo(their, REWARDS, old, ref, clip_eps, kl_coeff)
    close(stats["loss_tensor"].data, expected.detach().numpy(), "grpo loss")
    assert stats["loss"] == pytest.approx(stats["pg_loss"] + stats["kl_loss"], rel=1e-6)
    if clip_eps == 0.2:  # the band bites: the loss differs from the unclipped ratio's
        wide = grpo_objective(mine, REWARDS, old, ref, 1e6, kl_coeff)["loss"]
        assert abs(stats["loss"] - wide) > 0.01
    grads_of((stats["loss_tensor"], expected), ours, theirs)


def test_grpo_refuses_what_it_cannot_compute(twins):
    ours, _ = twins
    logps = tg.stack([sequence_logprob(ours, ids, n) for ids, n in ROLLOUTS[:2]])
    with pytest.raises(tg.errors.InputError, match="needs old_logps"):
        grpo_objective(logps, [1.0, 0.0], clip_eps=0.2)
    with pytest.raises(tg.errors.InputError, match="needs ref_logps"):
        grpo_objective(logps, [1.0, 0.0], kl_coeff=0.1)
    with pytest.raises(tg.errors.InputError, match="at least 2 rewards"):
        compute_advantage_stats([1.0])
    with pytest.raises(tg.errors.InputError, match="num_rollouts must be >= 2"):
        compute_grpo_loss(ours, None, {"problem": "x", "answer": "1"}, num_rollouts=1)


class CharTokenizer:
    eos_token_id = 0

    def encode(self, text):
        return [1 + ord(c) % 49 for c in text[-20:]]  # the prompt's tail: short and cheap

    def decode(self, ids):
        return "".join("\\boxed{4}" if i == 4 else chr(97 + i % 26) for i in ids)


def test_compute_grpo_loss_samples_rewards_and_backpropagates(twins):
    ours, _ = twins
    tg.manual_seed(3)
    stats = compute_grpo_loss(ours, CharTokenizer(), {"problem": "2+2?", "answer": "4"},
                              num_rollouts=3, max_new_tokens=6, temperature=1.5, top_p=None,
                              clip_eps=0.2)
    assert len(stats["samples"]) == 3 and len(stats["entropies"]) == 3
    assert stats["rewards"] == [reward_rlvr(s["text"], "4") for s in stats["samples"]]
    assert stats["policy_ratio"] == pytest.approx(1.0, rel=1e-5)  # rollouts from the model itself
    ours.zero_grad()
    stats["loss_tensor"].backward()
    grads = [p.grad for p in ours.parameters() if p.grad is not None]
    assert grads and all(np.isfinite(g).all() for g in grads)


def test_train_rlvr_grpo_logs_checkpoints_and_resumes_exactly(tmp_path):
    from tinygpt.reasoning.grpo_train import (COLUMNS, METRICS, plot_grpo_metrics, read_metrics,
                                              train_rlvr_grpo)
    problems = [{"problem": "2+2?", "answer": "4"}, {"problem": "1+3?", "answer": "4"},
                {"problem": "5-1?", "answer": "4"}]
    settings = dict(num_rollouts=3, max_new_tokens=5, temperature=1.5, top_p=None, lr=1e-3,
                    clip_eps=0.2, inner_epochs=2, kl_coeff=0.01, log=lambda msg: None)

    def start():
        tg.manual_seed(4)
        return Qwen3Model(TINY_QWEN3)
    whole = start()
    rows = train_rlvr_grpo(whole, CharTokenizer(), problems, tmp_path / "a", steps=4, **settings)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert list(rows[0]) == list(COLUMNS)
    assert read_metrics(tmp_path / "a" / METRICS)[3]["loss"] == pytest.approx(rows[3]["loss"],
                                                                              abs=1e-6)
    assert any(r["policy_ratio"] != pytest.approx(1.0) for r in rows)  # the 2nd inner epoch moved
    halves = start()
    train_rlvr_grpo(halves, CharTokenizer(), problems, tmp_path / "b", steps=2, **settings)
    again = start()
    resumed = train_rlvr_grpo(again, CharTokenizer(), problems, tmp_path / "b", steps=4,
                              resume=True, **settings)
    assert [r["step"] for r in resumed] == [3, 4]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in rows[2:]]
    for (name, a), b in zip(whole.state_dict().items(), again.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    metrics = read_metrics(tmp_path / "b" / METRICS)
    assert [r["step"] for r in metrics] == [1, 2, 3, 4]
    png = plot_grpo_metrics(tmp_path / "a" / METRICS, tmp_path / "a" / "grpo.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
