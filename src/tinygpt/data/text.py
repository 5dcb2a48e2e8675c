"""Reading user text files and tokenizing user text, with errors that name the file or the row.

`read_text(path)` decodes UTF-8 (a byte-order mark, as some editors write, is dropped) and
reports bytes that are not UTF-8 by file and offset; it reads through `tinygpt.files.read_text`,
which refuses folders, missing files and files too large or endless to read. `encode_row(tokenizer, text, where)` turns
a tokenizer's complaint (tiktoken's several-line error for a special token such as
`<|endoftext|>` inside a message) into one line that says which row it is.
"""
from .. import files
from ..errors import InputError, TinyGPTError


def read_text(path, what: str = "data file") -> str:
    """The text of `path`, decoded as UTF-8 with an optional byte-order mark; a folder, a missing
    file, or one too large or endless to read is an InputError (`tinygpt.files.read_text`)."""
    return files.read_text(path, what)


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
