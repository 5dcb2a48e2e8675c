"""GPT-2's pre-tokenisation: the regex that cuts text into "words" before byte-pair merging.

Book ch. 2.5 (and its bonus notebook "BPE from scratch"): BPE never merges across these pieces, so
" world" and "!" are encoded separately. The pattern is the one in OpenAI's GPT-2 `encoder.py`:

    's|'t|'re|'ve|'m|'ll|'d        English contractions (ASCII apostrophe, lower case only)
     ?\\p{L}+                      a run of letters, with at most one leading space
     ?\\p{N}+                      a run of digits/numbers, with at most one leading space
     ?[^\\s\\p{L}\\p{N}]+            a run of anything else (punctuation, emoji, ...), one leading space
    \\s+(?!\\S)                     whitespace not followed by a non-space: trailing runs, or all but
                                   the last space of a run (that space joins the next word)
    \\s+                            any remaining whitespace

One correction is needed to match tiktoken exactly. `\\p{L}` and `\\p{N}` depend on the Unicode
version of the regex engine: tiktoken 0.14 compiles the pattern with Rust's regex-syntax, whose tables
are Unicode 16.0, while the `regex` module used here has Unicode 17.0. The 4,657 code points below were
assigned as letters or numbers in 17.0 and are unassigned (so "anything else") for tiktoken; we take
them out of the letter and number classes. Measured, not guessed: tests/test_tokenizers.py compares
every code point's class against tiktoken, so a future upgrade of either library shows up there.
With a `regex` module on Unicode 16.0 or older the exclusion is a no-op.
"""
import re

import regex
from ..errors import InputError, InputIndexError, InputTypeError

GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Letters (L) and numbers (N) new in Unicode 17.0: (first, last) code points, inclusive.
UNICODE_17_LETTERS_AND_NUMBERS = (
    (0x0088F, 0x0088F), (0x00C5C, 0x00C5C), (0x00CDC, 0x00CDC), (0x0A7CE, 0x0A7CF),
    (0x0A7D2, 0x0A7D2), (0x0A7D4, 0x0A7D4), (0x0A7F1, 0x0A7F1), (0x10940, 0x10959),
    (0x10EC5, 0x10EC7), (0x11DB0, 0x11DDB), (0x11DE0, 0x11DE9), (0x16EA0, 0x16EB8),
    (0x16EBB, 0x16ED3), (0x16FF2, 0x16FF6), (0x187F8, 0x187FF), (0x18D09, 0x18D1E),
    (0x18D80, 0x18DF2), (0x1E6C0, 0x1E6DE), (0x1E6E0, 0x1E6E2), (0x1E6E4, 0x1E6E5),
    (0x1E6E7, 0x1E6ED), (0x1E6F0, 0x1E6F4), (0x1E6FE, 0x1E6FF), (0x2B73A, 0x2B73F),
    (0x2CEA2, 0x2CEAD), (0x323B0, 0x33479),
)


def _class_body(ranges) -> str:
    """Regex character-class body for code point ranges, e.g. r"\\U0000088f\\U0000a7ce-\\U0000a7cf"."""
    return "".join(rf"\U{a:08x}" if a == b else rf"\U{a:08x}-\U{b:08x}" for a, b in ranges)


def _unicode16_pattern() -> str:
    """GPT2_SPLIT_PATTERN with letters/numbers restricted to Unicode 16.0, tiktoken's tables.

    Uses the `regex` module's version-1 set operations: [A--B] is A minus B, [[A][B]] is A or B.
    """
    new = _class_body(UNICODE_17_LETTERS_AND_NUMBERS)
    letter, number = rf"[\p{{L}}--[{new}]]", rf"[\p{{N}}--[{new}]]"
    other = rf"[[^\s\p{{L}}\p{{N}}][{new}]]"  # everything that is neither, including the new code points
    return (
        r"(?V1)'s|'t|'re|'ve|'m|'ll|'d"
        rf"| ?{letter}+| ?{number}+| ?{other}+"
        r"|\s+(?!\S)|\s+"
    )


SPLIT_REGEX = regex.compile(_unicode16_pattern())
# The set operations make SPLIT_REGEX several times slower than the plain pattern, and the two
# differ only on the new code points, so text without any of them (nearly all text) takes the plain one.
_PLAIN_REGEX = regex.compile(GPT2_SPLIT_PATTERN)
_NEW_CODE_POINT = re.compile(f"[{_class_body(UNICODE_17_LETTERS_AND_NUMBERS)}]")  # stdlib re: faster here


def split_words(text: str) -> list[str]:
    """Cut `text` into GPT-2's pre-tokenisation pieces; "".join(pieces) == text.

    >>> split_words("Hello, world!  It's 2024")
    ['Hello', ',', ' world', '!', ' ', ' It', "'s", ' 2024']
    """
    exact = not text.isascii() and _NEW_CODE_POINT.search(text)
    return (SPLIT_REGEX if exact else _PLAIN_REGEX).findall(text)


def check_text(text) -> None:
    """Raise InputTypeError (a TypeError) unless `text` is a str, InputError (a ValueError) if it
    holds surrogates (not valid Unicode, e.g. bytes decoded with errors='surrogateescape')."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        raise InputTypeError(
            f"expected text (str), got {type(text).__name__}; decode it first, e.g. data.decode('utf-8')"
        )
    if not isinstance(text, str):
        raise InputTypeError(f"expected text (str), got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start]
        raise InputError(
            f"text is not valid Unicode: surrogate code point U+{ord(bad):04X} at index {err.start} "
            "cannot be encoded as UTF-8 (was it decoded with errors='surrogateescape', or built from "
            "UTF-16 halves?)"
        ) from None


def check_ids(ids, n_vocab: int, who: str) -> list:
    """`ids` as a list of ints, each in 0..n_vocab-1; else InputIndexError naming the id and the
    vocabulary size (or InputTypeError for an id that is not a whole number)."""
    out = []
    for i in ids:
        try:
            value = int(i)
        except (TypeError, ValueError, OverflowError):
            value = None
        if value is None or value != i:
            raise InputTypeError(f"{who}: token ids are whole numbers, got {i!r}")
        if not 0 <= value < n_vocab:
            raise InputIndexError(f"{who}: token id {value} is outside the vocabulary of "
                                  f"{n_vocab} ids (0..{n_vocab - 1})")
        out.append(value)
    return out
