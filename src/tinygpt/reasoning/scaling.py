"""Inference-time scaling (the sequel's chapters 4 and 5): spend more compute per question.

  self_consistency_vote   n sampled answers, majority over their extracted final answers
  heuristic_score         a cheap score: a boxed answer, else a number, and brevity
  avg_logprob_answer      the model's mean log-probability of an answer's tokens
  best_of_n               n sampled answers, the one scoring highest
  self_refinement_loop    draft, critique, refine; keep the revision when it scores no worse

The model is any tinygpt language model (Qwen3Model, GPTModel, ...) and the tokenizer any with
`encode`, `decode` and `eos_token_id`; sampling is seeded with `tinygpt.manual_seed`."""
import math

import numpy as np

from ..core.random import manual_seed
from ..core.autograd import no_grad
from ..core.tensor import Tensor
from ..errors import InputError
from .sampling import generate_text, generate_texts
from .verifier import extract_final_candidate, render_prompt


def majority_vote(short_answers) -> dict:
    """The vote over extracted answers: counts (in order of first appearance), groups (answer ->
    the sample indices giving it), majority_winners (every answer with the top count, in order of
    first appearance) and final_answer (the winner, or None on a tie or with no answers)."""
    counts, groups = {}, {}
    for i, answer in enumerate(short_answers):
        counts[answer] = counts.get(answer, 0) + 1
        groups.setdefault(answer, []).append(i)
    top = max(counts.values(), default=0)
    winners = [answer for answer, n in counts.items() if n == top]
    return {"counts": counts, "groups": groups, "majority_winners": winners,
            "final_answer": winners[0] if len(winners) == 1 else None}


def _sampled_texts(model, tokenizer, prompt, n, seed, batch_size, max_new_tokens, temperature,
                   top_p):
    """Yield `n` sampled answers to `prompt`. batch_size 1: one at a time, sample i seeded with
    seed + i + 1 (the reference's seeding); more: `batch_size` at a time, decoded together
    (generate_texts), each batch seeded with seed + (its first sample's index) + 1."""
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    for first in range(0, n, batch_size):
        if seed is not None:
            manual_seed(seed + first + 1)
        count = min(batch_size, n - first)
        if count == 1:
            yield generate_text(model, tokenizer, prompt, max_new_tokens, temperature, top_p)
        else:
            yield from generate_texts(model, tokenizer, prompt, count, max_new_tokens,
                                      temperature, top_p)


def self_consistency_vote(model, tokenizer, prompt: str, num_samples: int = 10,
                          temperature: float = 0.8, top_p: float = 0.9,
                          max_new_tokens: int = 2048, show_progress: bool = True,
                          seed=None, batch_size: int = 1) -> dict:
    """Sample `num_samples` answers to `prompt` (sample i seeded with seed + i + 1 when `seed` is
    given; with `batch_size` > 1 they are decoded that many at a time, see _sampled_texts),
    extract each final answer, and vote (see `majority_vote`). Returns the vote with
    full_answers and short_answers."""
    full_answers, short_answers = [], []
    for i, answer in enumerate(_sampled_texts(model, tokenizer, prompt, num_samples, seed,
                                              batch_size, max_new_tokens, temperature, top_p)):
        full_answers.append(answer)
        short_answers.append(extract_final_candidate(answer, fallback="number_then_full"))
        if show_progress:
            print(f"[Sample {i + 1}/{num_samples}] -> {short_answers[-1]!r}")
    return {"full_answers": full_answers, "short_answers": short_answers,
            **majority_vote(short_answers)}


def heuristic_score(answer: str, prompt=None, brevity_bonus: float = 500.0,
                    boxed_bonus: float = 2.0, extract_bonus: float = 1.0,
                    fulltext_bonus: float = 0.0) -> float:
    """boxed_bonus for a non-empty \\boxed{} answer, else extract_bonus for a number, else
    fulltext_bonus for any text; plus 1.5 * exp(-len(answer) / brevity_bonus). `prompt` is
    ignored (the signature every score function shares)."""
    if extract_final_candidate(answer, fallback="none"):
        score = boxed_bonus
    elif extract_final_candidate(answer, fallback="number_only"):
        score = extract_bonus
    elif extract_final_candidate(answer, fallback="number_then_full"):
        score = fulltext_bonus
    else:
        score = 0.0
    return score + 1.5 * math.exp(-len(answer) / brevity_bonus)


def avg_logprob_answer(model, tokenizer, prompt: str, answer: str) -> float:
    """The mean over the answer's tokens of log p(token | everything before it), prompt and
    answer encoded separately and joined."""
    prompt_ids, answer_ids = list(tokenizer.encode(prompt)), list(tokenizer.encode(answer))
    if not prompt_ids or not answer_ids:
        raise InputError("avg_logprob_answer needs a non-empty prompt and answer")
    ids = np.asarray([prompt_ids + answer_ids], dtype=np.int64)  # (1, n)
    with no_grad():
        logits = model(Tensor(ids)).data[0].astype(np.float64)  # (n, vocab)
    logits = logits - logits.max(axis=-1, keepdims=True)
    logprobs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))  # (n, vocab)
    start = len(prompt_ids) - 1                       # the position predicting answer token 0
    rows = np.arange(start, ids.shape[1] - 1)         # (len(answer_ids),)
    return float(logprobs[rows, ids[0, rows + 1]].mean())


def best_of_n(model, tokenizer, prompt: str, n: int = 4, score_fn=heuristic_score,
              temperature: float = 0.8, top_p: float = 0.9, max_new_tokens: int = 2048,
              seed=None, batch_size: int = 1) -> dict:
    """Sample `n` answers (seeded as self_consistency_vote's, `batch_size` at a time) and keep
    the one `score_fn(answer=..., prompt=...)` scores highest (the first on a tie). Returns best
    (text), best_extracted, best_index, answers and scores."""
    answers = list(_sampled_texts(model, tokenizer, prompt, n, seed, batch_size, max_new_tokens,
                                  temperature, top_p))
    scores = [float(score_fn(answer=answer, prompt=prompt)) for answer in answers]
    best = int(np.argmax(scores))
    return {"best": answers[best], "best_extracted": extract_final_candidate(answers[best]),
            "best_index": best, "answers": answers, "scores": scores}


def make_critique_prompt(raw_prompt: str, draft: str) -> str:
    return ("You are a meticulous reviewer. Identify logical errors, missing steps, or arithmetic "
            "mistakes. If the answer seems correct, say so briefly. Then propose a concise plan "
            f"to fix issues.\n\nQuestion:\n{raw_prompt}\n\nDraft answer:\n{draft}\n\n"
            "Write a short critique and bullet-point fix plan (under ~120 words).\nCritique:")


def make_refine_prompt(raw_prompt: str, draft: str, critique: str) -> str:
    return ("Revise the answer using the critique. Keep it concise and end with a final boxed "
            f"result: \\boxed{{ANSWER}}\n\nQuestion:\n{raw_prompt}\n\nPrevious answer:\n{draft}\n\n"
            f"Critique:\n{critique}\n\nRevised answer:")


def self_refinement_loop(model, tokenizer, raw_prompt: str, iterations: int = 2,
                         max_response_tokens: int = 2048, max_critique_tokens: int = 256,
                         score_fn=None, prompt_renderer=render_prompt, prompt_suffix: str = "",
                         temperature: float = 0.7, top_p: float = 0.9) -> dict:
    """Draft an answer, then `iterations` times: critique it, write a revision, and keep the
    revision when its score (score_fn(answer=, prompt=); 0 without one) is at least the current
    one. Returns final_full, final_extracted and one record per step."""
    prompt = prompt_renderer(raw_prompt) + prompt_suffix

    def write(text_prompt, limit):
        return generate_text(model, tokenizer, text_prompt, limit, temperature, top_p)

    def score(answer):
        return float(score_fn(answer=answer, prompt=prompt)) if score_fn else 0.0
    current = write(prompt, max_response_tokens)
    current_score, steps = score(current), []
    for it in range(iterations):
        critique = write(make_critique_prompt(raw_prompt, current), max_critique_tokens)
        revised = write(make_refine_prompt(raw_prompt, current, critique), max_response_tokens)
        revised_score = score(revised)
        steps.append({"iteration": it + 1, "draft_full": current,
                      "draft_extracted": extract_final_candidate(current), "critique": critique,
                      "revised_full": revised, "revised_extracted": extract_final_candidate(revised),
                      "score_before": current_score, "score_after": revised_score})
        if revised_score >= current_score:
            current, current_score = revised, revised_score
    return {"final_full": current, "final_extracted": extract_final_candidate(current),
            "steps": steps}
