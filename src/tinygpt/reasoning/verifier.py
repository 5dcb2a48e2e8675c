"""Grading a model's math answer (the sequel, "Build a Reasoning Model (From Scratch)", chapter 3).

The steps a grader takes, each a function of the chapter's name:
  render_prompt(problem)          the prompt that asks for the answer as \\boxed{ANSWER}
  get_last_boxed(text)            the contents of the last \\boxed{...}, braces balanced
  extract_final_candidate(text)   that, or (fallback) the last number, or the whole text
  normalize_text(text)            LaTeX to plain SymPy-readable text (\\frac{a}{b} -> (a)/(b), ...)
  sympy_parser / equality_check   parse both sides and compare simplify(gt - pred) with 0
  grade_answer(pred, gt)          split tuples "(a, b)" into parts, every part equal

Verdicts equal those of the reference package (`reasoning_from_scratch.ch03`), checked over the
MATH-500 answers and perturbed forms of them by tests/test_reasoning_verifier.py. SymPy is an
optional dependency (`pip install tinygpt[reasoning]`); only the last two steps need it.
"""
import re

from ..errors import MissingDependencyError

BOXED = r"\boxed"
# a signed integer, fraction a/b, or decimal with an optional exponent: the "last number" fallback
RE_NUMBER = re.compile(r"-?(?:\d+/\d+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)")
RE_CHAT_TOKEN = re.compile(r"<\|[^>]+?\|>")  # <|im_end|>, <|assistant|>, ...
# (pattern, replacement) applied in order: spacing and sizing macros go, products become *
LATEX_FIXES = (
    (r"\\left\s*", ""), (r"\\right\s*", ""),
    (r"\\,|\\!|\\;|\\:", ""),
    (r"\\cdot", "*"), (r"\u00B7|\u00D7", "*"),  # \cdot, middle dot, times sign
    (r"\\\^\\circ", ""),
    (r"\\dfrac", r"\\frac"), (r"\\tfrac", r"\\frac"),
    (r"°", ""),
)
SUPERSCRIPTS = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁽⁾", "0123456789+-()"))
MAX_PARSE_CHARS = 2000  # longer "answers" are a rambling model's output: not parsed at all


def render_prompt(problem: str) -> str:
    """The chapter's prompt: the problem, with the final answer asked for as \\boxed{ANSWER}."""
    return ("You are a helpful math assistant.\n"
            "Answer the question and write the final result on a new line as:\n"
            "\\boxed{ANSWER}\n\n"
            f"Question:\n{problem}\n\nAnswer:")


def get_last_boxed(text: str):
    """The text inside the last `\\boxed{...}` of `text` (nested braces kept), or None when there
    is none, the `{` is missing, or its braces never close."""
    start = text.rfind(BOXED)
    if start < 0:
        return None
    i = start + len(BOXED)
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth, opened = 0, i + 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[opened:j]
    return None


def extract_final_candidate(text: str, fallback: str = "number_then_full") -> str:
    """The answer a response gives: its last \\boxed{} content (stripped of spaces and `$`); with
    no (non-empty) box, `fallback` "number_then_full" takes the last number, else the whole text;
    "number_only" the last number or ""; anything else gives ""."""
    if not text:
        return ""
    boxed = get_last_boxed(text.strip())
    if boxed:
        return boxed.strip().strip("$ ")
    if fallback not in ("number_then_full", "number_only"):
        return ""
    numbers = RE_NUMBER.findall(text)
    if numbers:
        return numbers[-1]
    return text if fallback == "number_then_full" else ""


def _superscripts(text: str) -> str:
    """x² -> x**2 after a base character, then any superscript left -> its plain digit."""
    def power(m):
        return m.group(1) + "**" + "".join(SUPERSCRIPTS[c] for c in m.group(2))
    text = re.sub(r"([0-9A-Za-z\)\]\}])([⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻]+)", power, text)
    return "".join(SUPERSCRIPTS.get(c, c) for c in text)


def _strip_wrappers(text: str) -> str:
    """Chat tokens, a multiple-choice label ("b: 2"), degree marks, a whole-string \\text{}, and
    the inline/display math delimiters \\( \\) \\[ \\]."""
    text = RE_CHAT_TOKEN.sub("", text).strip()
    label = re.match(r"^[A-Za-z]\s*[.:]\s*(.+)$", text)
    if label:
        text = label.group(1)
    text = re.sub(r"\^\s*\{\s*\\circ\s*\}", "", text)  # ^{\circ}
    text = re.sub(r"\^\s*\\circ", "", text).replace("°", "")  # ^\circ, the degree sign
    wrapped = re.match(r"^\\text\{(?P<x>.+?)\}$", text)
    if wrapped:
        text = wrapped.group("x")
    return re.sub(r"\\\(|\\\)|\\\[|\\\]", "", text)


def normalize_text(text: str) -> str:
    """`text` as lower-case, brace-free plain math SymPy can read: \\frac{a}{b} -> (a)/(b),
    \\sqrt{x} -> sqrt(x), ^ -> **, "1,234" -> "1234", "2 1/2" -> "2+1/2"; "" for empty input."""
    if not text:
        return ""
    text = _strip_wrappers(text)
    for pattern, replacement in LATEX_FIXES:
        text = re.sub(pattern, replacement, text)
    text = _superscripts(text)
    text = text.replace("\\%", "%").replace("$", "").replace("%", "")
    text = re.sub(r"\\sqrt\s*\{([^}]*)\}", r"sqrt(\1)", text)
    text = re.sub(r"\\sqrt\s+([^\\\s{}]+)", r"sqrt(\1)", text)
    text = re.sub(r"\\frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}", r"(\1)/(\2)", text)
    text = re.sub(r"\\frac\s+([^\s{}]+)\s+([^\s{}]+)", r"(\1)/(\2)", text)
    text = text.replace("^", "**")
    text = re.sub(r"(?<=\d)\s+(\d+/\d+)", r"+\1", text)  # a mixed number: 2 1/2 -> 2+1/2
    text = re.sub(r"(?<=\d),(?=\d\d\d(\D|$))", "", text)  # thousands separators
    return text.replace("{", "").replace("}", "").strip().lower()


def _sympy():
    try:
        import sympy
        from sympy.parsing import sympy_parser as spp
    except ImportError:
        raise MissingDependencyError("grading answers needs SymPy: pip install "
                                     "'tinygpt[reasoning]' (or pip install sympy)") from None
    return sympy, spp


def sympy_parser(expr):
    """`expr` (normalized text) as a SymPy expression, evaluated, with implicit multiplication
    ("2x" -> 2*x); None when it does not parse, is None, or is longer than 2000 characters."""
    if expr is None or len(expr) > MAX_PARSE_CHARS:
        return None
    sympy, spp = _sympy()
    from tokenize import TokenError
    from sympy.polys.polyerrors import PolynomialError
    transformations = spp.standard_transformations + (spp.implicit_multiplication_application,)
    try:
        return spp.parse_expr(expr, transformations=transformations, evaluate=True)
    except (sympy.SympifyError, SyntaxError, TypeError, AttributeError, IndexError, TokenError,
            ValueError, PolynomialError):
        return None


def equality_check(expr_gtruth: str, expr_pred: str) -> bool:
    """True when the two normalized strings are identical, or both parse and their difference
    simplifies to 0."""
    if expr_gtruth == expr_pred:
        return True
    gtruth, pred = sympy_parser(expr_gtruth), sympy_parser(expr_pred)
    if gtruth is None or pred is None:
        return False
    sympy, _ = _sympy()
    try:
        return bool(sympy.simplify(gtruth - pred) == 0)
    except (sympy.SympifyError, TypeError):
        return False


def split_into_parts(text: str) -> list:
    """"(a, b)" or "[a, b]" -> ["a", "b"] (when no part is empty); other text -> [text]; "" -> []."""
    if not text:
        return []
    if len(text) >= 2 and text[0] in "([" and text[-1] in ")]" and "," in text[1:-1]:
        parts = [p.strip() for p in text[1:-1].split(",")]
        if all(parts):
            return parts
    return [text]


def grade_answer(pred_text, gt_text) -> bool:
    """True when the predicted answer equals the ground truth: both normalized, split into the
    same number of tuple parts, and each pair equal by `equality_check`. None on either side is
    False. (Interval brackets are not compared: "(0, 1]" and "[0, 1)" grade equal.)"""
    if pred_text is None or gt_text is None:
        return False
    gt_parts = split_into_parts(normalize_text(gt_text))
    pred_parts = split_into_parts(normalize_text(pred_text))
    if not gt_parts or len(gt_parts) != len(pred_parts):
        return False
    return all(equality_check(gt, pred) for gt, pred in zip(gt_parts, pred_parts))
