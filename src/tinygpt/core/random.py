"""The random streams behind initialisation, dropout and sampling.

`manual_seed(n)` resets both, so a seeded run is reproducible end to end:

- the *initialisation* stream is PyTorch's CPU generator re-done (mt19937 seeded as
  `torch.manual_seed(n)` seeds it, with torch's uniform and normal transforms; kernels/mt19937.py).
  `rand`, `randn`, `uniform` draw from it, and so do `nn.Linear` and `nn.Embedding`, in the book's
  construction order: after `manual_seed(123)` the book's modules get the same initial weights as
  under `torch.manual_seed(123)`, bit for bit against torch's portable (DEFAULT-capability) build.
- dropout masks and multinomial sampling draw from a NumPy `Generator` seeded with the same `n`:
  their values differ from torch's (torch draws them from the one stream above).

The state of both can be saved and restored (checkpoints do this so a resumed run continues the
same streams).
"""
import contextlib
import math

import numpy as np

from ..errors import InputError, InputTypeError
from .. import kernels
from ..kernels import mt19937
from ..kernels.dropout import GOLDEN   # the mask hash's counter step

STATE_FORMAT = "tinygpt-rng-2"

if kernels.USE_NUMBA:
    _uniform_fill, _normal_fill = mt19937.uniform_fill_numba, mt19937.normal_fill_numba
else:
    _uniform_fill, _normal_fill = mt19937.uniform_fill_ref, mt19937.normal_fill_ref


class _TorchStream:
    """torch's CPUGeneratorImpl: the mt19937 words, how many are used, and the cached second
    sample of the scalar Box-Muller (`next_double_normal_sample`)."""

    def __init__(self, seed: int):
        self.key, self.pos, self.next_normal = mt19937.seed_key(seed), mt19937.N, None

    def uniform64(self, n: int) -> np.ndarray:
        out = np.empty(n, np.float64)
        self.pos = _uniform_fill(self.key, self.pos, out, 0.0, 1.0)
        return out

    def scalar_normal(self) -> float:
        """torch's `normal_distribution<double>`: tensors of < 16 values draw one at a time."""
        if self.next_normal is not None:
            value, self.next_normal = self.next_normal, None
            return value + 0.0                  # torch's `value * std + mean`: -0.0 -> +0.0
        u1, u2 = self.uniform64(2)
        r = math.sqrt(-2.0 * math.log1p(-u2))
        theta = 2.0 * math.pi * u1
        self.next_normal = r * math.sin(theta)
        return r * math.cos(theta) + 0.0


_generator = np.random.default_rng(0)
_stream = _TorchStream(0)


def manual_seed(seed: int) -> None:
    global _generator, _stream
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed!r}")
    _generator = np.random.default_rng(int(seed))
    _stream = _TorchStream(int(seed))


def generator() -> np.random.Generator:
    """The NumPy generator of dropout masks and sampling (not of initial weights)."""
    return _generator


def _float(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise InputError(f"random values are float32 or float64, not {dtype}")
    return dtype


def uniform(shape, low: float, high: float, dtype) -> np.ndarray:
    """A new array of `shape` filled as torch's `empty(shape).uniform_(low, high)` (C order)."""
    out = np.empty(shape, _float(dtype))
    _stream.pos = _uniform_fill(_stream.key, _stream.pos, out.reshape(-1), low, high)
    return out


def rand(shape, dtype) -> np.ndarray:
    """torch.rand: U[0, 1)."""
    return uniform(shape, 0.0, 1.0, dtype)


def randn(shape, dtype) -> np.ndarray:
    """torch.randn / `normal_(0, 1)`: Box-Muller by blocks of 16 from 16 values on, else one at a
    time with the double-precision scalar sampler (which keeps its second sample for later)."""
    out = np.empty(shape, _float(dtype))
    flat = out.reshape(-1)
    if flat.size >= 16:
        _stream.pos = _normal_fill(_stream.key, _stream.pos, flat)
    else:
        for i in range(flat.size):
            flat[i] = _stream.scalar_normal()
    return out


def get_rng_state() -> dict:
    """Both streams' state as JSON-ready values (checkpoints store it in their header)."""
    return {"format": STATE_FORMAT, "numpy": _generator.bit_generator.state,
            "init": {"key": [int(w) for w in _stream.key], "pos": int(_stream.pos),
                     "next_normal": _stream.next_normal}}


def set_rng_state(state: dict) -> None:
    """Restore a `get_rng_state()` value. A state saved before the initialisation stream existed
    (NumPy's generator state alone, no "format" key) restores the dropout and sampling
    stream, which is all a resumed training run draws from; the initialisation stream is kept."""
    if not isinstance(state, dict):
        raise InputTypeError(f"RNG state must be a dict, got {type(state).__name__}")
    if state.get("format") is None and "bit_generator" in state:
        _generator.bit_generator.state = state
        return
    if state.get("format") != STATE_FORMAT:
        raise InputError(f"unknown RNG state format {state.get('format')!r} "
                         f"(this tinygpt reads {STATE_FORMAT!r})")
    init = state["init"]
    key = np.asarray(init["key"], dtype=np.int64)
    pos, next_normal = init["pos"], init["next_normal"]
    if key.shape != (mt19937.N,) or key.min() < 0 or key.max() > 0xFFFFFFFF:
        raise InputError(f"RNG state: init key must be {mt19937.N} 32-bit words")
    if not isinstance(pos, int) or not 0 <= pos <= mt19937.N:
        raise InputError(f"RNG state: init pos must be an int in [0, {mt19937.N}], got {pos!r}")
    if next_normal is not None and not isinstance(next_normal, float):
        raise InputError(f"RNG state: next_normal must be a float or None, got {next_normal!r}")
    _generator.bit_generator.state = state["numpy"]
    _stream.key, _stream.pos, _stream.next_normal = key.astype(np.uint32), pos, next_normal


# ---------------------------------------------------------------- dropout of a part of a batch

_part = None   # (first sample, samples) of the batch part being run, under `batch_part`


@contextlib.contextmanager
def batch_part(first: int, count: int):
    """Run samples [first, first + count) of a batch as that batch's rows: each dropout mask is
    the rows of the whole batch's mask (the mask hashes (seed, position), kernels/dropout.py). So
    gradient accumulation and data-parallel ranks, which run parts of one batch, drop exactly
    what the whole batch drops, when each part starts from the same generator state."""
    global _part
    saved, _part = _part, (int(first), int(count))
    try:
        yield
    finally:
        _part = saved


def dropout_seed(size: int) -> int:
    """The seed of one dropout mask over `size` values (batch first): one draw from `generator()`,
    shifted under `batch_part` to the part's first sample."""
    seed = int(_generator.integers(0, 2**63))
    if _part is None:
        return seed
    first, count = _part
    return (seed + first * (size // count) * int(GOLDEN)) % 2**64
