"""Preference data for DPO (the book's chapter-7 bonus notebook `dpo-from-scratch.ipynb`).

- `load_preference_data(path)`: chapter 7's instruction entries, each also holding a `chosen`
  and a `rejected` response (the shipped `instruction-data-with-preference.json`: 1,100 entries,
  split 935 / 110 / 55 by `split_instruction_data` like chapter 7).
- `PreferenceDataset`: per entry the tokenized prompt (`format_input`) and the prompt +
  "\\n\\n### Response:\\n" + chosen / rejected text, tokenized.
- `dpo_collate_fn`: the notebook's collate: chosen and rejected padded to one length, with masks
  that select the response tokens only.
"""
import numpy as np

from ..data.instruct import RESPONSE_HEADER, format_input, load_instruction_data
from ..data.text import encode_row
from ..errors import InputError
from ..tokenizer import get_gpt2_tokenizer

PREFERENCE_KEYS = ("chosen", "rejected")


class MalformedPreferenceError(InputError):
    """A preference entry without a `chosen` or `rejected` string."""


def check_preference_entries(data, where="preference data") -> list:
    """Raise MalformedPreferenceError naming the first entry (by index) whose `chosen` or
    `rejected` is missing or not a string; return `data`."""
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise MalformedPreferenceError(f"{where}: entry {i} is a {type(entry).__name__}, "
                                           "not an object with chosen/rejected")
        for key in PREFERENCE_KEYS:
            if key not in entry:
                raise MalformedPreferenceError(f"{where}: entry {i} has no {key!r} response "
                                               f"(keys: {', '.join(map(repr, entry))})")
            if not isinstance(entry[key], str):
                raise MalformedPreferenceError(f"{where}: entry {i}: {key!r} must be a string, "
                                               f"got {type(entry[key]).__name__}")
    return data


def load_preference_data(path) -> list:
    """The entries of a JSON (or JSON-lines) file: instruction/input/output checked as chapter 7
    checks them (tinygpt.data.instruct), then chosen/rejected by `check_preference_entries`."""
    return check_preference_entries(load_instruction_data(path), where=str(path))


class PreferenceDataset:
    """Each item is a dict of token-id lists: `prompt` (the Alpaca prompt of section 7.2),
    `chosen` and `rejected` (the prompt, the response header and that response)."""

    def __init__(self, data, tokenizer=None):
        tokenizer = get_gpt2_tokenizer() if tokenizer is None else tokenizer
        check_preference_entries(data)
        self.data = data
        self.encoded_texts = []
        for i, entry in enumerate(data):
            prompt = format_input(entry)
            where = f"preference entry {i} ({entry['instruction'][:40]!r})"
            self.encoded_texts.append({
                "prompt": encode_row(tokenizer, prompt, where),
                "chosen": encode_row(tokenizer, f"{prompt}{RESPONSE_HEADER}{entry['chosen']}", where),
                "rejected": encode_row(tokenizer, f"{prompt}{RESPONSE_HEADER}{entry['rejected']}", where),
            })

    def __getitem__(self, index):
        return self.encoded_texts[index]

    def __len__(self) -> int:
        return len(self.data)


def dpo_collate_fn(batch, pad_token_id: int = 50256, allowed_max_length: int | None = None,
                   mask_prompt_tokens: bool = True) -> dict:
    """The notebook's collate for a list of PreferenceDataset items.

    `chosen` and `rejected` are padded with `pad_token_id` to one length: the longest of either
    in the batch + 1 (so every sequence ends in at least one end-of-text). Their masks are True
    on the tokens the log-probabilities average over: False on the padding and, with
    `mask_prompt_tokens`, on the prompt and the 2 newline tokens after it (the "\\n\\n" before
    "### Response:"; the header itself stays selected, as in the notebook). Then all four arrays
    are cut to `allowed_max_length` tokens if given.

    Returns {"prompt": list of int64 arrays (unpadded), "chosen", "rejected": (b, T) int64,
    "chosen_mask", "rejected_mask": (b, T) bool}."""
    if not batch:
        raise InputError("dpo_collate_fn got an empty batch")
    max_length_common = max(len(item[key]) + 1 for item in batch for key in PREFERENCE_KEYS)
    out = {"prompt": [np.asarray(item["prompt"], dtype=np.int64) for item in batch]}
    for key in PREFERENCE_KEYS:
        ids = np.full((len(batch), max_length_common), pad_token_id, dtype=np.int64)  # (b, T)
        mask = np.zeros((len(batch), max_length_common), dtype=bool)                  # (b, T)
        for row, item in enumerate(batch):
            sequence = item[key]
            ids[row, :len(sequence)] = sequence
            first = len(item["prompt"]) + 2 if mask_prompt_tokens else 0
            mask[row, first:len(sequence)] = True
        if allowed_max_length is not None:
            ids, mask = ids[:, :allowed_max_length], mask[:, :allowed_max_length]
        out[key], out[f"{key}_mask"] = np.ascontiguousarray(ids), np.ascontiguousarray(mask)
    return out


def usable_entries(data, dataset: PreferenceDataset, allowed_max_length: int):
    """The entries (and their indices) whose chosen and rejected responses both keep at least one
    selected token after the cut to `allowed_max_length` (a prompt that fills the model's context
    leaves nothing to score, and an empty selection has no mean log-probability)."""
    keep = []
    for i, item in enumerate(dataset.encoded_texts):
        first = len(item["prompt"]) + 2
        # compute_logprobs scores positions 1.. of the sequence: at least one of them selected
        if all(max(first, 1) < min(len(item[k]), allowed_max_length) for k in PREFERENCE_KEYS):
            keep.append(i)
    return [data[i] for i in keep], keep
