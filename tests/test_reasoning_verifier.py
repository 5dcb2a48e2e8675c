"""The math verifier (tinygpt.reasoning.verifier, the sequel's chapter 3) and the MATH-500 loader.

Our verdicts are compared with the reference package `reasoning_from_scratch.ch03` (installed
`--no-deps` in CI; skipped with the reason when missing) over every MATH-500 answer, against itself
and against perturbed forms. There is no deliberate difference: where the reference's rules are
weak (a bare `\\pi` is never parsed by SymPy, so "2\\pi" and "2 \\pi" grade unequal; interval
brackets are not compared) tinygpt keeps its verdicts, so that accuracies match the book's.
normalize_text is compared on every (answer, perturbation) pair; grade_answer, which runs SymPy
(~4 ms a call), on every self-comparison and on the first SAMPLE pairs of each perturbation."""
import hashlib
import json
import re

import pytest

from tinygpt.errors import InputError, MissingFileError
from tinygpt.reasoning import (extract_final_candidate, get_last_boxed, grade_answer,
                               load_math500_test, load_math_problems, normalize_text,
                               render_prompt)

pytest.importorskip("sympy", reason="the verifier's SymPy half needs the [reasoning] extra")
SAMPLE = 60


def reference():
    try:
        from reasoning_from_scratch import ch03
    except ImportError as err:
        pytest.skip(f"reasoning-from-scratch is not installed ({err}); "
                    "pip install --no-deps reasoning-from-scratch")
    return ch03


ANSWERS = [p["answer"] for p in load_math500_test()]


def _commas(a):  # 12345 -> 12,345 (thousands separators), only on plain integers
    return f"{int(a):,}" if re.fullmatch(r"\d{4,}", a) else a


PERTURB = {
    "dfrac": lambda a: a.replace(r"\frac", r"\dfrac"),
    "tfrac": lambda a: a.replace(r"\frac", r"\tfrac"),
    "left_right": lambda a: a.replace("(", r"\left(").replace(")", r"\right)"),
    "units": lambda a: a + r"\text{ cm}",
    "units_plain": lambda a: a + " units",
    "text": lambda a: r"\text{" + a + "}",
    "degrees": lambda a: a + r"^\circ",
    "degrees_braced": lambda a: a + r"^{\circ}",
    "degree_sign": lambda a: a + "°",
    "spaces": lambda a: "  " + a.replace(",", " , ").replace("+", " + ") + " ",
    "no_spaces": lambda a: a.replace(" ", ""),
    "commas": _commas,
    "interval_swap": lambda a: a.translate(str.maketrans("()[]", "[])(")),
    "tuple_brackets": lambda a: "[" + a[1:-1] + "]" if a.startswith("(") else a,
    "pi_spaced": lambda a: a.replace(r"\pi", r" \pi"),
    "pi_word": lambda a: a.replace(r"\pi", "pi"),
    "dollars": lambda a: "$" + a + "$",
    "display": lambda a: r"\(" + a + r"\)",
    "cdot": lambda a: "1 \\cdot " + a,  # an explicit product with 1
    "wrong": lambda a: a + "+1",
    "label": lambda a: "B: " + a,
}


def test_normalize_text_matches_reference_on_every_answer_and_perturbation():
    ch03 = reference()
    for name, perturb in PERTURB.items():
        for a in ANSWERS:
            p = perturb(a)
            assert normalize_text(p) == ch03.normalize_text(p), (name, a, p)
    assert normalize_text("") == ch03.normalize_text("") == ""


def test_grade_answer_matches_reference_on_self_and_perturbed():
    ch03 = reference()
    for a in ANSWERS:
        assert grade_answer(a, a) == ch03.grade_answer(a, a), a
    for name, perturb in PERTURB.items():
        pairs = [(perturb(a), a) for a in ANSWERS if perturb(a) != a][:SAMPLE]
        assert pairs, name
        for pred, gt in pairs:
            assert grade_answer(pred, gt) == ch03.grade_answer(pred, gt), (name, pred, gt)


def test_extract_final_candidate_matches_reference():
    ch03 = reference()
    texts = [f"Step 1 ... so the result is\n\\boxed{{{a}}}\nDone 7." for a in ANSWERS]
    texts += [f"\\boxed{{wrong}} then \\boxed {{ ${a}$ }}" for a in ANSWERS[:50]]
    texts += ["The answer is 3/4.", "x = -2.5e3 and then 12", "no number here", "", None,
              r"\boxed{", r"\boxed{}", r"\boxed{\frac{1}{2}", r"\boxed x", "\\boxed{a}}"]
    for text in texts:
        for fallback in ("number_then_full", "number_only", "none"):
            assert (extract_final_candidate(text, fallback=fallback)
                    == ch03.extract_final_candidate(text, fallback=fallback)), (text, fallback)
            if text is not None:
                assert get_last_boxed(text) == ch03.get_last_boxed(text), text
    assert render_prompt("1+1?") == ch03.render_prompt("1+1?")


# Verdicts known from the chapter's own table, independent of either implementation
@pytest.mark.parametrize("pred, gt, expected", [
    ("3/4", r"\frac{3}{4}", True), (r"\dfrac{3}{4}", "0.75", True), ("(3)/(4)", "3/4", True),
    (r"\text{(B)}", "B", True), ("1,000", "1000", True), ("10\\%", "10", True),
    (r"45^\circ", "45", True), ("x^2+2x", "2x+x^2", True), (r"(1, \sqrt{2})", r"(1,\sqrt 2)", True),
    ("5", "4", False), ("(1,2)", "(1,2,3)", False), ("", "0", False), (None, "1", False),
    (r"2\pi", r"2 \pi", False),  # a bare \pi never parses: the reference's rule, kept
])
def test_grade_answer_verdicts(pred, gt, expected):
    assert grade_answer(pred, gt) is expected


def test_get_last_boxed_nesting_and_unbalanced():
    assert get_last_boxed(r"a \boxed{1} b \boxed{\frac{1}{2}} c") == r"\frac{1}{2}"
    assert get_last_boxed(r"\boxed{\frac{1}{2}") is None
    assert get_last_boxed("no box") is None
    assert extract_final_candidate("so 12 apples and 7 pears") == "7"
    assert extract_final_candidate("no digits", fallback="number_only") == ""


def test_math500_asset_is_the_attributed_file():
    from tinygpt.assets import asset_path
    path = asset_path("math500_test.json")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == (
        "a9eccff7e25ecaf3952614e5b92fe081b4f0549c68ae6a387b96e131df9ddf41")
    assert "math500_test.json" in (path.parent / "SOURCES.md").read_text(encoding="utf-8")
    problems = load_math500_test()
    assert len(problems) == 500 and len({p["id"] for p in problems}) == 500
    assert problems[0]["id"] == problems[0]["unique_id"] == "test/precalculus/807.json"


def test_load_math_problems_any_list_and_its_errors(tmp_path):
    good = tmp_path / "p.json"
    good.write_text(json.dumps([{"problem": "1+1?", "answer": "2"},
                                {"problem": "2+2?", "answer": "4", "id": "q7"}]))
    assert [p["id"] for p in load_math_problems(good)] == ["0", "q7"]
    with pytest.raises(MissingFileError, match="nope.json"):
        load_math_problems(tmp_path / "nope.json")
    cases = {"[]": "non-empty JSON list", '{"problem": "x"}': "non-empty JSON list",
             "[1]": "entry 0 is a int", '[{"problem": "x"}]': "no string 'answer'",
             '[{"question": "x", "answer": "1"}]': "no string 'problem'",
             '[{"problem": "x", "answer": 2}]': "no string 'answer' \\(a int\\)",
             "[{": "not valid JSON",
             '[{"problem":"a","answer":"1","id":"z"},{"problem":"b","answer":"2","id":"z"}]':
                 "repeats the id 'z'"}
    for text, message in cases.items():
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(InputError, match=message):
            load_math_problems(bad)
