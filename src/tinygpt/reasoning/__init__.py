"""Reasoning models on the engine: the methods of the book's sequel, "Build a Reasoning Model
(From Scratch)" (S. Raschka), under the names of its reference package `reasoning_from_scratch`.

  verifier.py   chapter 3: render_prompt, get_last_boxed, extract_final_candidate, normalize_text,
                sympy_parser, equality_check, grade_answer (SymPy: pip install tinygpt[reasoning])
  data.py       the shipped MATH-500 test set and any JSON list of problem/answer objects
  evaluate.py   chapter 3: evaluate_math_stream, the resumable JSONL evaluation of `tinygpt eval-math`
                (batch_size problems decoded together: tinygpt.model.generate_batched)
  sampling.py   generate_text, sample_response: greedy or top-p generation up to an end token;
                generate_texts, sample_responses: n samples of one prompt decoded together
  scaling.py    chapters 4-5: self_consistency_vote, heuristic_score, avg_logprob_answer, best_of_n,
                self_refinement_loop
  rl.py         chapters 6-7: reward_rlvr, reward_format, sequence_logprob(_and_entropy),
                compute_advantage_stats, grpo_objective, compute_grpo_loss
  grpo_train.py chapters 6-7: train_rlvr_grpo (metrics CSV, checkpoints, resume, chapter 7's
                skip_zero_advantage_updates and held-out evaluation every K steps), plot_grpo_metrics
"""
from .data import load_math500_test, load_math_problems
from .evaluate import evaluate_math_stream
from .sampling import generate_text, generate_texts, sample_response, sample_responses
from .scaling import (avg_logprob_answer, best_of_n, heuristic_score, majority_vote,
                      self_consistency_vote, self_refinement_loop)
from .grpo_train import plot_grpo_metrics, train_rlvr_grpo
from .rl import (compute_advantage_stats, compute_grpo_loss, grpo_objective, reward_format,
                 reward_rlvr, sequence_logprob, sequence_logprob_and_entropy)
from .verifier import (equality_check, extract_final_candidate, get_last_boxed, grade_answer,
                       normalize_text, render_prompt, split_into_parts, sympy_parser)

__all__ = ["load_math500_test", "load_math_problems", "evaluate_math_stream", "generate_text",
           "generate_texts", "sample_response", "sample_responses", "avg_logprob_answer", "best_of_n", "heuristic_score", "majority_vote",
           "self_consistency_vote", "self_refinement_loop", "equality_check", "extract_final_candidate",
           "get_last_boxed", "grade_answer", "normalize_text", "render_prompt", "split_into_parts",
           "sympy_parser", "plot_grpo_metrics", "train_rlvr_grpo", "compute_advantage_stats",
           "compute_grpo_loss", "grpo_objective", "reward_format", "reward_rlvr", "sequence_logprob",
           "sequence_logprob_and_entropy"]
