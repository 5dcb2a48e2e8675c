"""The bytes a decoded token reads, and the timing line `tinygpt generate --stats` prints.

Decoding one token reads every Linear weight once (the output head included; a tied head IS the
embedding table, read once as the head), one row of each embedding table that is not also the
head, and the small vectors (norm scales, biases). `decode_bytes(model)` adds these up in the
bytes they are held in: 4 a weight in float32, 2 in bf16, 1.125 in q8. Divided by the time a
token takes, that is the rate the weights were read at, to set against the memory bandwidth
(bench/generate_modern.py's "x bound" column).
"""
import time

from ..nn import Embedding, Linear
from .layers import QuantEmbedding, QuantLinear
from .weights import QuantWeight


def _nbytes(weight) -> int:
    return weight.nbytes if isinstance(weight, QuantWeight) else weight.data.nbytes


def decode_bytes(model) -> int:
    """Bytes of weights one decoded token reads (see the module docstring); the KV cache is not
    counted."""
    total, read_whole, one_row = 0, set(), set()
    for m in model.modules():
        if isinstance(m, (Linear, QuantLinear)) and id(m.weight) not in read_whole:
            read_whole.add(id(m.weight))
            total += _nbytes(m.weight)
    for m in model.modules():
        if isinstance(m, (Embedding, QuantEmbedding)) and id(m.weight) not in read_whole | one_row:
            one_row.add(id(m.weight))
            total += _nbytes(m.weight) // max(m.weight.shape[0], 1)
    for p in model.parameters():  # norm scales, biases
        if id(p) not in read_whole and id(p) not in one_row:
            total += p.data.nbytes
    return total


class GenerationStats:
    """Times one generation: make it just before the first token is asked for, call `tick()` as
    each token arrives, then `line()`. The first token carries the prompt's cost (prefill); the
    decode rate is taken over the tokens after it."""

    def __init__(self, model, prompt_tokens: int):
        self.bytes, self.prompt_tokens = decode_bytes(model), prompt_tokens
        self.start, self.first, self.last, self.count = time.perf_counter(), None, None, 0

    def tick(self) -> None:
        self.last = time.perf_counter()
        self.first = self.first or self.last
        self.count += 1

    def line(self) -> str:
        """One line: prompt tok/s, decode tok/s and the GB/s of weight reads it implies."""
        if not self.count:
            return f"stats: prompt {self.prompt_tokens} tokens; no token generated"
        prefill = self.first - self.start
        text = (f"stats: prompt {self.prompt_tokens} tokens in {prefill:.2f} s "
                f"({self.prompt_tokens / prefill:.1f} tok/s)")
        decoded, seconds = self.count - 1, self.last - self.first
        if decoded < 1 or seconds <= 0:
            return text + f"; 1 new token ({size(self.bytes)} of weights a token)"
        rate = decoded / seconds
        return (text + f"; then {decoded} tokens in {seconds:.2f} s: {rate:.2f} tok/s, "
                f"{size(self.bytes)} of weights a token read at {rate * self.bytes / 1e9:.2f} GB/s")


def size(nbytes: int) -> str:
    """1234567 -> "1.23 MB" (kB, MB or GB, three significant digits or more)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}" if nbytes < 100 * scale else f"{nbytes / scale:.0f} {unit}"
    return f"{nbytes / 1e3:.3g} kB"
