"""Reasoning models on the engine: the methods of the book's sequel, "Build a Reasoning Model
(From Scratch)" (S. Raschka), under the names of its reference package `reasoning_from_scratch`.

  verifier.py   chapter 3: render_prompt, get_last_boxed, extract_final_candidate, normalize_text,
                sympy_parser, equality_check, grade_answer (SymPy: pip install tinygpt[reasoning])
  data.py       the shipped MATH-500 test set and any JSON list of problem/answer objects
"""
from .data import load_math500_test, load_math_problems
from .verifier import (equality_check, extract_final_candidate, get_last_boxed, grade_answer,
                       normalize_text, render_prompt, split_into_parts, sympy_parser)

__all__ = ["load_math500_test", "load_math_problems", "equality_check", "extract_final_candidate",
           "get_last_boxed", "grade_answer", "normalize_text", "render_prompt", "split_into_parts",
           "sympy_parser"]
