"""Chapter 7's extras to GRPO training (tinygpt.reasoning.grpo_train): skipping the update of a
group whose advantages are all 0 (`skip_zero_adv`, `skip_zero_advantage_updates`) and the
in-loop evaluation on held-out problems every K steps (the metrics' eval_acc column), on a tiny
Qwen3 and a character tokenizer whose id 4 reads "\\boxed{4}"."""
import json

import numpy as np
import pytest

import tinygpt as tg
from modern_models import TINY_QWEN3
from tinygpt.model import Qwen3Model, generate
from tinygpt.reasoning import extract_final_candidate, grade_answer
from tinygpt.reasoning.grpo_train import (METRICS, held_out, plot_grpo_metrics, read_metrics,
                                          train_rlvr_grpo)
from tinygpt.reasoning.rl import compute_grpo_loss

pytest.importorskip("sympy")
QUIET = dict(num_rollouts=3, max_new_tokens=5, temperature=1.5, top_p=None, lr=1e-2,
             log=lambda msg: None)


class CharTokenizer:
    eos_token_id = 0

    def encode(self, text):
        return [1 + ord(c) % 49 for c in text[-12:]]

    def decode(self, ids):
        return "".join("\\boxed{4}" if i == 4 else chr(97 + i % 26) for i in ids)


class NoBoxTokenizer(CharTokenizer):
    """No answer can be boxed: every reward is 0, every group's advantages are 0."""

    def decode(self, ids):
        return "".join(chr(97 + i % 26) for i in ids)


def model(seed=4):
    tg.manual_seed(seed)
    return Qwen3Model(TINY_QWEN3)


def test_compute_grpo_loss_skips_a_zero_advantage_group():
    m, example = model(), {"problem": "2+2?", "answer": "4"}
    runs = {}
    for skip in (False, True):
        tg.manual_seed(3)
        runs[skip] = compute_grpo_loss(m, NoBoxTokenizer(), example, num_rollouts=3,
                                       max_new_tokens=5, temperature=1.5, top_p=None,
                                       clip_eps=0.2, kl_coeff=0.1, ref_model=model(),
                                       skip_zero_adv=skip)
    kept, skipped = runs[False], runs[True]
    assert kept["rewards"] == skipped["rewards"] == [0.0] * 3
    assert kept["loss_tensor"] is not None and not kept["is_zero_adv"]
    assert skipped["loss_tensor"] is None and skipped["is_zero_adv"]
    assert skipped["loss"] == skipped["kl_loss"] == 0.0 and skipped["policy_ratio"] is None
    assert [s["text"] for s in skipped["samples"]] == [s["text"] for s in kept["samples"]]
    np.testing.assert_allclose(skipped["entropies"], kept["entropies"], rtol=1e-5)
    assert m.training                                   # the train mode is given back
    # a group with different rewards is not skipped
    tg.manual_seed(3)
    mixed = compute_grpo_loss(m, CharTokenizer(), {"problem": "2+2?", "answer": "4"},
                              num_rollouts=8, max_new_tokens=5, temperature=3.0, top_p=None,
                              skip_zero_adv=True)
    assert len(set(mixed["rewards"])) > 1 and mixed["loss_tensor"] is not None


def test_skipped_updates_leave_the_weights_alone(tmp_path):
    """Every group has advantages 0: with the option no AdamW step runs (its weight decay would
    move the weights); without it the weights move."""
    problems = [{"problem": "2+2?", "answer": "4"}, {"problem": "1+3?", "answer": "4"}]
    before = model().state_dict()
    for skip, out in ((True, "skip"), (False, "noskip")):
        m = model()
        rows = train_rlvr_grpo(m, NoBoxTokenizer(), problems, tmp_path / out, steps=2,
                               skip_zero_advantage_updates=skip, **QUIET)
        assert [r["skipped"] for r in rows] == [int(skip)] * 2
        same = [np.array_equal(a, b) for a, b in zip(before.values(), m.state_dict().values())]
        assert all(same) if skip else not all(same)
    assert [r["skipped"] for r in read_metrics(tmp_path / "skip" / METRICS)] == [1.0, 1.0]


def greedy_text(m, tokenizer, problem, max_new):
    ids = tokenizer.encode(problem)
    new = [int(t) for t in generate(m.eval(), np.array([ids]), max_new, len(ids) + max_new)[0, len(ids):]]
    return tokenizer.decode(new[:new.index(0)] if 0 in new else new)


def test_in_loop_evaluation_every_k_steps(tmp_path):
    train = [{"problem": f"{i}+1?", "answer": "4"} for i in range(3)]
    held = [{"problem": "zz?", "answer": "4", "id": "a"}, {"problem": "yy?", "answer": "5", "id": "b"},
            {"problem": "xx?", "answer": "4", "id": "c"}]
    m = model(6)
    rows = train_rlvr_grpo(m, CharTokenizer(), train, tmp_path, steps=4, eval_data=held,
                           eval_every=2, eval_batch_size=2, prompt_renderer=lambda p: p, **QUIET)
    assert [r["eval_acc"] == "" for r in rows] == [True, False, True, False]
    assert [r["eval_acc"] for r in read_metrics(tmp_path / METRICS)][1::2] == \
        pytest.approx([rows[1]["eval_acc"], rows[3]["eval_acc"]], abs=1e-6)
    # the last evaluation is the trained model's greedy answers, graded as eval-math grades
    lines = [json.loads(x) for x in (tmp_path / "eval-step00004.jsonl").read_text().splitlines()]
    texts = [greedy_text(m, CharTokenizer(), row["problem"], QUIET["max_new_tokens"]) for row in held]
    assert [r["generated_text"] for r in lines] == texts
    right = [grade_answer(extract_final_candidate(t), row["answer"]) for t, row in zip(texts, held)]
    assert rows[3]["eval_acc"] == pytest.approx(np.mean(right))
    assert (tmp_path / "eval-step00002.jsonl").is_file()
    png = plot_grpo_metrics(tmp_path / METRICS, tmp_path / "m.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(tg.errors.InputError, match="eval_every needs eval_data"):
        train_rlvr_grpo(m, CharTokenizer(), train, tmp_path / "x", steps=1, eval_every=1, **QUIET)


def test_held_out_leaves_out_what_training_sees():
    pool = [{"problem": f"p{i}", "answer": str(i)} for i in range(6)]
    assert [r["problem"] for r in held_out(pool, pool, 2, 3)] == ["p3", "p4", "p5"]
    assert [r["problem"] for r in held_out(pool, pool, 4, 3)] == ["p4", "p5"]
    assert [r["problem"] for r in held_out(pool, pool[3:], 10, 2)] == ["p1", "p2"]
    with pytest.raises(tg.errors.InputError, match="no held-out problems"):
        held_out(pool, pool, 6, 3)
