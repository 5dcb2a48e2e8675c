"""The one random generator behind initialisation, dropout and sampling.

`manual_seed(n)` resets it, so a seeded run is reproducible end to end; its state can be saved
and restored (checkpoints do this so a resumed run continues the same random stream).
"""
import numpy as np
from ..errors import InputError

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    global _generator
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed!r}")
    _generator = np.random.default_rng(int(seed))


def generator() -> np.random.Generator:
    return _generator


def get_rng_state() -> dict:
    return _generator.bit_generator.state


def set_rng_state(state: dict) -> None:
    _generator.bit_generator.state = state
