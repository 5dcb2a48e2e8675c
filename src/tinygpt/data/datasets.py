"""Datasets that turn text into training examples (book ch. 2.6, "Data sampling with a sliding window").

Next-token prediction: the target of each input position is the token that follows it, so targets are
the inputs shifted by one token. Items are `(input_ids, target_ids)` pairs of int64 ndarrays.
"""
import numpy as np

from tinygpt.tokenizer import ENDOFTEXT, get_gpt2_tokenizer
from ..errors import InputError, InputIndexError, InputTypeError


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise InputError(f"{name} must be >= 1, got {value}")
    return int(value)


class GPTDatasetV1:
    """Book ch. 2.6: windows of `max_length` tokens, starting every `stride` tokens.

    Window i holds tokens [i*stride, i*stride + max_length) as input and the same span shifted by one as
    target. As in the book, window starts run over range(0, n_tokens - max_length, stride), so there are
    ceil((n_tokens - max_length) / stride) windows. stride == max_length gives non-overlapping windows;
    a smaller stride overlaps them (more examples, more repetition).

    `tokenizer` defaults to GPT-2's; it must have `encode(text, allowed_special=...)`. The windows are
    stored as two read-only (num_windows, max_length) int64 arrays, `input_ids` and `target_ids`; items
    are read-only views of their rows.
    """

    def __init__(self, txt: str, tokenizer=None, max_length: int = 256, stride: int = 128):
        if not isinstance(txt, str):
            raise InputTypeError(f"txt must be text (str), got {type(txt).__name__}; decode bytes first")
        self.max_length = _check_positive_int("max_length", max_length)
        self.stride = _check_positive_int("stride", stride)
        tokenizer = get_gpt2_tokenizer() if tokenizer is None else tokenizer
        # The book allows <|endoftext|> in the text: it separates documents.
        token_ids = np.asarray(tokenizer.encode(txt, allowed_special={ENDOFTEXT}), dtype=np.int64)  # (n,)
        n = len(token_ids)
        if n <= self.max_length:
            raise InputError(
                f"text too short: it has {n} tokens, but one window needs max_length + 1 = "
                f"{self.max_length + 1} (the inputs plus the one-token-shifted target)"
            )
        starts = np.arange(0, n - self.max_length, self.stride)  # (num_windows,), the book's range
        index = starts[:, None] + np.arange(self.max_length)  # (num_windows, max_length)
        self.token_ids = token_ids
        self.input_ids = token_ids[index]  # (num_windows, max_length)
        self.target_ids = token_ids[index + 1]  # (num_windows, max_length), shifted by one
        for a in (self.token_ids, self.input_ids, self.target_ids):
            a.flags.writeable = False  # items are views: a caller's edit must not corrupt the dataset

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, idx):
        if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)):
            raise InputTypeError(f"dataset index must be an int, got {type(idx).__name__}")
        if not -len(self) <= idx < len(self):
            raise InputIndexError(f"window {idx} out of range for a dataset of {len(self)} windows")
        return self.input_ids[idx], self.target_ids[idx]  # (max_length,), (max_length,)
