"""Reading user text files and tokenizing user text, with errors that name the file or the row.

`read_text(path)` decodes UTF-8 (a byte-order mark, as some editors write, is dropped) and
reports bytes that are not UTF-8 by file and offset. `encode_row(tokenizer, text, where)` turns
a tokenizer's complaint (tiktoken's several-line error for a special token such as
`<|endoftext|>` inside a message) into one line that says which row it is.
"""
from pathlib import Path

from ..errors import InputError, TinyGPTError


def read_text(path) -> str:
    """The text of `path`, decoded as UTF-8 with an optional byte-order mark."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InputError(f"{path} is not UTF-8 text: byte {e.start} (line {line}) is "
                         f"{raw[e.start:e.start + 1]!r} ({e.reason}); save it as UTF-8") from None


def encode_row(tokenizer, text: str, where: str) -> list:
    """tokenizer.encode(text); a ValueError from the tokenizer becomes an InputError that names
    `where` (e.g. "data.tsv, message 17") and gives the first line of the tokenizer's message."""
    try:
        return tokenizer.encode(text)
    except TinyGPTError:
        raise
    except ValueError as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise InputError(f"{where} cannot be tokenized: {first} (remove it from the text)") from None
