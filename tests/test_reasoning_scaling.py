"""Inference-time scaling (tinygpt.reasoning.scaling, the sequel's chapters 4-5) against the
reference package on fixed samples: the generator of both is replaced by one that returns the
same listed texts, so the vote's counting and ties, the scores and the refinement loop's
choices must come out identical. avg_logprob_answer is compared on a tiny Qwen3 with the book's
PyTorch Qwen3Model holding the same weights (torch is test-only)."""
import numpy as np
import pytest
import torch

import tinygpt as tg
from modern_models import TINY_QWEN3, randomize_norms
from tinygpt.model import Qwen3Model
from tinygpt.reasoning import (avg_logprob_answer, best_of_n, heuristic_score, majority_vote,
                               self_consistency_vote, self_refinement_loop)
from tinygpt.reasoning import scaling

pytest.importorskip("sympy")

SAMPLE_SETS = [
    [r"so \boxed{4}", "the answer is 4", r"\boxed{5}", "maybe 4.", r"\boxed{ 5 }"],  # 4 wins 3:2
    [r"\boxed{1}", r"\boxed{2}", r"\boxed{2}", r"\boxed{1}"],                          # a 2:2 tie
    ["no number at all", "no number at all", r"\boxed{x}", "7 and 8", "8"],            # text 2, 8 2
    [r"\boxed{3}"],
    ["", "", r"\boxed{}"],                                                             # empty answers
]


def reference(name):
    return pytest.importorskip(f"reasoning_from_scratch.{name}", reason="reasoning-from-scratch "
                               "is not installed: pip install --no-deps reasoning-from-scratch")


class FixedTexts:
    """Stands in for a generator: returns the listed texts in order, whatever it is asked."""

    def __init__(self, texts):
        self.texts = list(texts)

    def __call__(self, *args, **kwargs):
        return self.texts.pop(0)


@pytest.mark.parametrize("samples", SAMPLE_SETS)
def test_self_consistency_vote_counts_and_ties_as_the_reference(samples, monkeypatch):
    ch04 = reference("ch04")
    monkeypatch.setattr(ch04, "generate_text_stream_concat_flex", FixedTexts(samples))
    theirs = ch04.self_consistency_vote(None, None, "p", "cpu", num_samples=len(samples),
                                        show_progress=False)
    monkeypatch.setattr(scaling, "generate_text", FixedTexts(samples))
    ours = self_consistency_vote(None, None, "p", num_samples=len(samples), show_progress=False)
    assert ours == theirs
    assert list(ours["counts"]) == list(theirs["counts"])  # same order of the counts
    assert list(ours["majority_winners"]) == list(theirs["majority_winners"])


def test_majority_vote_by_hand():
    vote = majority_vote(["4", "5", "4", "5", "6"])
    assert vote["counts"] == {"4": 2, "5": 2, "6": 1} and vote["groups"]["5"] == [1, 3]
    assert vote["majority_winners"] == ["4", "5"] and vote["final_answer"] is None
    assert majority_vote(["9", "4", "9"])["final_answer"] == "9"
    assert majority_vote([]) == {"counts": {}, "groups": {}, "majority_winners": [],
                                 "final_answer": None}


def test_heuristic_score_matches_the_reference():
    ch05 = reference("ch05")
    texts = [r"\boxed{12}", "It is 12.", "no numbers", "", r"\boxed{}" + " 3", "x" * 2000,
             r"long " * 300 + r"\boxed{\frac{1}{2}}"]
    for text in texts:
        for kwargs in ({}, {"brevity_bonus": 50.0, "fulltext_bonus": 0.5, "extract_bonus": 1.5}):
            assert heuristic_score(text, **kwargs) == ch05.heuristic_score(text, **kwargs), text
    assert heuristic_score(r"\boxed{1}") == pytest.approx(2.0 + 1.5 * np.exp(-9 / 500))


def test_best_of_n_keeps_the_highest_score_first_on_ties(monkeypatch):
    texts = ["I think 3", r"\boxed{4}", r"\boxed{5}", "none"]
    monkeypatch.setattr(scaling, "generate_text", FixedTexts(texts))
    out = best_of_n(None, None, "p", n=4)
    assert out["best_index"] == 1 and out["best"] == r"\boxed{4}" and out["best_extracted"] == "4"
    assert out["scores"] == [heuristic_score(t) for t in texts]


@pytest.mark.parametrize("with_score", [False, True])
def test_self_refinement_loop_matches_the_reference(with_score, monkeypatch):
    ch05 = reference("ch05")
    texts = ["draft 3", "critique one", r"revised \boxed{3}", "critique two",
             "a much longer revision that is worse " * 5]
    score = ch05.heuristic_score if with_score else None
    monkeypatch.setattr(ch05, "generate_text_stream_concat_flex", FixedTexts(texts))
    theirs = ch05.self_refinement_loop(None, None, "What is 1+2?", "cpu", iterations=2,
                                       score_fn=score)
    monkeypatch.setattr(scaling, "generate_text", FixedTexts(texts))
    ours = self_refinement_loop(None, None, "What is 1+2?", iterations=2,
                                score_fn=heuristic_score if with_score else None)
    assert ours == theirs


class CharTokenizer:
    """Characters as ids below the tiny vocabulary (enough for a log-probability test)."""
    eos_token_id = 0

    def encode(self, text):
        return [1 + ord(c) % 49 for c in text]

    def decode(self, ids):
        return "".join(chr(96 + i % 26) for i in ids)


def test_avg_logprob_answer_matches_the_reference_on_a_tiny_qwen3():
    ch05 = reference("ch05")
    book = pytest.importorskip("llms_from_scratch.qwen3")
    tg.manual_seed(0)
    ours = randomize_norms(Qwen3Model(TINY_QWEN3), 0).eval()
    theirs = book.Qwen3Model({**TINY_QWEN3, "dtype": torch.float32})
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    theirs.eval()
    tok = CharTokenizer()
    for prompt, answer in [("What is 2+2?", " 4"), ("Q", "a longer answer")]:
        expected = ch05.avg_logprob_answer(theirs, tok, prompt, answer)
        assert avg_logprob_answer(ours, tok, prompt, answer) == pytest.approx(expected, rel=1e-5)


def test_sampling_is_reproducible_with_a_seed():
    tg.manual_seed(0)
    model = Qwen3Model(TINY_QWEN3).eval()
    tok = CharTokenizer()
    runs = [self_consistency_vote(model, tok, "2+2=", num_samples=3, temperature=1.0,
                                  max_new_tokens=5, show_progress=False, seed=s)
            for s in (7, 7, 8)]
    assert runs[0] == runs[1] and runs[0]["full_answers"] != runs[2]["full_answers"]
    assert all(len(a) <= 5 for a in runs[0]["full_answers"])


def test_batched_sampling_is_reproducible_and_batched(monkeypatch):
    """batch_size 3 over 5 samples: batches of 3 and 2, each seeded at its first sample's index
    and decoded together; reproducible, and the samples differ."""
    from tinygpt.reasoning import sampling
    tg.manual_seed(0)
    model = Qwen3Model(TINY_QWEN3).eval()
    tok, sizes, batched = CharTokenizer(), [], sampling.generate_batched
    monkeypatch.setattr(sampling, "generate_batched",
                        lambda m, prompts, *a, **k: sizes.append(len(prompts)) or batched(m, prompts, *a, **k))
    runs = [self_consistency_vote(model, tok, "2+2=", num_samples=5, temperature=1.5,
                                  max_new_tokens=6, show_progress=False, seed=s, batch_size=3)
            for s in (7, 7, 8)]
    assert sizes == [3, 2] * 3
    assert runs[0] == runs[1] and runs[0]["full_answers"] != runs[2]["full_answers"]
    assert len(set(runs[0]["full_answers"])) > 1
    best = best_of_n(model, tok, "2+2=", n=4, temperature=1.5, max_new_tokens=6, seed=7,
                     batch_size=3)
    assert best["answers"][:3] == runs[0]["full_answers"][:3]  # the same first batch and seed
    with pytest.raises(tg.errors.InputError, match="batch_size"):
        best_of_n(model, tok, "2+2=", n=2, seed=7, batch_size=0)
