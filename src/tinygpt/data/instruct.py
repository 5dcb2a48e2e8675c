"""Instruction data for supervised fine-tuning (book chapter 7).

- `load_instruction_data(path)`: a JSON list or a JSON-lines file of entries with the keys
  `instruction`, `input` (may be empty or missing) and `output`; the first malformed entry is
  reported by index (and line, for JSON lines) with what is wrong with it.
- `format_input(entry)`: the Alpaca-style prompt of section 7.2, exactly as the book writes it.
- `split_instruction_data(data)`: the book's split by list order, 85% train, 10% test, the
  rest validation (935 / 110 / 55 for the shipped 1,100 entries).
- `InstructionDataset`: every entry pre-tokenised as prompt + "\\n\\n### Response:\\n" + output.
- `custom_collate_fn`: the book's padding collate (section 7.3), returning int64 ndarrays.

Prompt masking (the book's exercise 7.2): build the dataset with `with_prompt_lengths=True`,
so each item is `(prompt_length, token_ids)`, and collate with `mask_prompt=True`; the targets
that are prompt tokens become `ignore_index`, so only the response is learned.
"""
import json
import pathlib
from collections import namedtuple

import numpy as np

from tinygpt.tokenizer import get_gpt2_tokenizer
from .text import encode_row, read_text
from ..errors import InputError

REQUIRED_KEYS = ("instruction", "output")  # `input` is optional: missing means ""
RESPONSE_HEADER = "\n\n### Response:\n"

Split = namedtuple("Split", ["train", "test", "val"])


class MalformedEntryError(InputError):
    """An instruction-data entry that is not {"instruction": str, "input": str, "output": str}."""


# --- loading ----------------------------------------------------------------------------------

def load_instruction_data(path) -> list:
    """Read a JSON list, or JSON lines (one object per line), of instruction entries.

    Returns a new list of dicts with `instruction`, `input` ("" when missing) and `output`
    (extra keys are kept). Raises FileNotFoundError for a missing file and
    `MalformedEntryError` (a ValueError) naming the first bad entry: its index, its line for
    JSON lines, and what is wrong (not an object, a missing key, a non-string or empty value)."""
    path = pathlib.Path(path)
    text = read_text(path, "instruction data file")  # MissingFileError (a FileNotFoundError) if missing
    if not text.strip():
        raise InputError(f"{path}: the file is empty; expected a JSON list of entries or JSON lines")
    try:
        parsed = json.loads(text)
        entries = parsed if isinstance(parsed, list) else [parsed]  # one object: JSON lines of one
        lines = [None] * len(entries)
    except json.JSONDecodeError as err:
        if err.msg != "Extra data" and text.lstrip().startswith("["):  # a broken JSON list
            raise InputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, "
                             f"column {err.colno})") from None
        entries, lines = _parse_json_lines(text, path)
    except (ValueError, RecursionError) as err:  # a 5,000-digit number, lists nested 100,000 deep
        raise InputError(f"{path}: not usable JSON ({type(err).__name__}: {str(err)[:200]})") from None
    if not entries:
        raise InputError(f"{path}: holds no entries")
    checked = []
    for i, (entry, line) in enumerate(zip(entries, lines)):
        problem = _entry_problem(entry)
        if problem:
            where = f"entry {i}" + (f" (line {line})" if line is not None else "")
            raise MalformedEntryError(f"{path}: {where} is malformed: {problem}")
        checked.append({**entry, "input": entry.get("input", "")})
    return checked


def _parse_json_lines(text: str, path):
    entries, lines = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing newline) are allowed
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise MalformedEntryError(f"{path}: entry {len(entries)} (line {lineno}) is malformed: "
                                      f"not valid JSON ({err.msg} at column {err.colno})") from None
        except (ValueError, RecursionError) as err:
            raise MalformedEntryError(f"{path}: entry {len(entries)} (line {lineno}) is malformed: "
                                      f"{type(err).__name__}: {str(err)[:200]}") from None
        lines.append(lineno)
    return entries, lines


def _entry_problem(entry) -> str:
    """What is wrong with one entry, or "" if nothing."""
    if not isinstance(entry, dict):
        return f"expected a JSON object with instruction/input/output, got {type(entry).__name__}"
    for key in REQUIRED_KEYS + ("input",):
        if key not in entry:
            if key == "input":
                continue
            return f"missing key {key!r} (has {', '.join(map(repr, entry)) or 'no keys'})"
        if not isinstance(entry[key], str):
            return f"{key!r} must be a string, got {type(entry[key]).__name__}"
        if key in REQUIRED_KEYS and not entry[key].strip():
            return f"{key!r} is empty"
    return ""


# --- prompt format and split ------------------------------------------------------------------

def format_input(entry) -> str:
    """Section 7.2: the Alpaca-style prompt (instruction, then the input if there is one)."""
    instruction_text = (
        f"Below is an instruction that describes a task. "
        f"Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )
    input_text = f"\n\n### Input:\n{entry['input']}" if entry.get("input") else ""
    return instruction_text + input_text


def split_instruction_data(data, train_frac: float = 0.85, test_frac: float = 0.10) -> Split:
    """Section 7.2: by list order, no shuffling: the first int(train_frac*n) entries train, the
    next int(test_frac*n) test, the rest validate. Returns Split(train, test, val)."""
    n = len(data)
    train_portion = int(n * train_frac)
    test_portion = int(n * test_frac)
    return Split(train=data[:train_portion],
                 test=data[train_portion:train_portion + test_portion],
                 val=data[train_portion + test_portion:])


# --- dataset and collate ----------------------------------------------------------------------

class InstructionDataset:
    """Section 7.3: each entry tokenised once as format_input(entry) + response.

    Items are lists of token ids, or `(prompt_length, token_ids)` with `with_prompt_lengths`
    (for prompt masking); `prompt_lengths[i]` is the number of tokens of format_input(entry i)."""

    def __init__(self, data, tokenizer=None, with_prompt_lengths: bool = False):
        tokenizer = get_gpt2_tokenizer() if tokenizer is None else tokenizer
        self.data = data
        self.with_prompt_lengths = with_prompt_lengths
        self.encoded_texts, self.prompt_lengths = [], []
        for i, entry in enumerate(data):
            instruction_plus_input = format_input(entry)
            response_text = f"{RESPONSE_HEADER}{entry['output']}"
            where = f"instruction entry {i} ({entry['instruction'][:40]!r})"
            self.encoded_texts.append(encode_row(tokenizer, instruction_plus_input + response_text, where))
            self.prompt_lengths.append(len(tokenizer.encode(instruction_plus_input)))

    def __getitem__(self, index):
        if self.with_prompt_lengths:
            return self.prompt_lengths[index], self.encoded_texts[index]
        return self.encoded_texts[index]

    def __len__(self) -> int:
        return len(self.data)


def custom_collate_fn(batch, pad_token_id: int = 50256, ignore_index: int = -100,
                      allowed_max_length: int | None = None, mask_prompt: bool = False,
                      prompt_lengths=None):
    """Section 7.3: pad a batch of token-id lists to one length; targets shifted by one.

    Every item gets one `pad_token_id` appended (its end-of-text) and is padded with more to the
    longest item + 1; inputs are all but the last token, targets all but the first. In each
    target row the first pad token stays (the model learns to stop) and every later one becomes
    `ignore_index`. Then rows are cut to `allowed_max_length` tokens if given.

    Prompt masking: with `mask_prompt`, the first `prompt_length - 1` targets (those that are
    prompt tokens) also become `ignore_index`. The lengths come from `(prompt_length, ids)`
    items (`InstructionDataset(..., with_prompt_lengths=True)`) or from `prompt_lengths`.
    Items may be such pairs without masking too; the lengths are then unused.

    Returns (inputs, targets), two (batch, T) int64 ndarrays."""
    if not batch:
        raise InputError("custom_collate_fn got an empty batch")
    pairs = isinstance(batch[0], tuple)
    items = [item[1] if pairs else item for item in batch]
    if mask_prompt:
        if prompt_lengths is None:
            if not pairs:
                raise InputError("mask_prompt=True needs the prompt lengths: items as "
                                 "(prompt_length, token_ids) pairs (InstructionDataset(..., "
                                 "with_prompt_lengths=True)) or the prompt_lengths argument")
            prompt_lengths = [item[0] for item in batch]
        if len(prompt_lengths) != len(items):
            raise InputError(f"got {len(prompt_lengths)} prompt lengths for {len(items)} items")
    batch_max_length = max(len(item) + 1 for item in items)  # every item gets an end-of-text
    inputs = np.full((len(items), batch_max_length - 1), pad_token_id, dtype=np.int64)   # (b, T)
    targets = np.full((len(items), batch_max_length - 1), pad_token_id, dtype=np.int64)  # (b, T)
    for row, item in enumerate(items):
        padded = np.full(batch_max_length, pad_token_id, dtype=np.int64)  # (T + 1,)
        padded[:len(item)] = item
        inputs[row] = padded[:-1]
        targets[row] = padded[1:]
        pad_positions = np.flatnonzero(targets[row] == pad_token_id)
        targets[row, pad_positions[1:]] = ignore_index  # keep the first pad: end-of-text
        if mask_prompt:
            targets[row, :max(int(prompt_lengths[row]) - 1, 0)] = ignore_index
    if allowed_max_length is not None:
        inputs, targets = inputs[:, :allowed_max_length], targets[:, :allowed_max_length]
    return np.ascontiguousarray(inputs), np.ascontiguousarray(targets)
