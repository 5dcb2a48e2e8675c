"""Shared by the kernel tests (tests/test_kernels_*.py): strategies, the warm-up fixture, layouts,
the tolerance check, and a subprocess runner.

Both implementations are always importable (``kernels.NUMBA`` / ``kernels.REFERENCE``), so the tests
run the same comparisons whatever ``TINYGPT_KERNELS`` says. Shapes use the odd sizes 1, 3, 17, 63,
65; inputs come C-contiguous, transposed or strided; float32 and float64.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import tinygpt.kernels as K
from helpers import tolerance

NB, REF = K.NUMBA, K.REFERENCE
ODD = st.sampled_from([1, 3, 17, 63, 65])
DTYPES = st.sampled_from([np.float32, np.float64])
LAYOUTS = st.sampled_from(["c", "T", "step"])
SEEDS = st.integers(0, 2**31 - 1)


def fast(n):
    return settings(deadline=None, max_examples=n, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="session", autouse=True)
def warm_kernels():
    """Compile (or load from the disk cache) every kernel once, so no example pays for it."""
    K.warmup(np.float32)
    K.warmup(np.float64)


def make(rng, shape, dtype, scale=1.0, layout="c"):
    """Random array with the given values and shape, laid out C-contiguous, transposed or strided."""
    a = (rng.standard_normal(shape) * scale).astype(dtype)
    if layout == "T" and a.ndim >= 2:
        return np.ascontiguousarray(a.swapaxes(-1, -2)).swapaxes(-1, -2)
    if layout == "step" and a.ndim >= 1:
        buf = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
        buf[..., ::2] = a
        return buf[..., ::2]
    return a


def check(name, got, want, scale=1.0):
    """Compare shape, then dtype, then values; print where it goes wrong."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
    tol = tolerance("kernel", want.dtype)
    tol["atol"] *= scale
    bad = ~np.isclose(got, want, equal_nan=True, **tol)
    if bad.any():
        diff = np.abs(got.astype(np.float64) - want)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(f"{name} {got.dtype} {got.shape}: max abs diff {np.nanmax(diff):.3g}, "
                             f"max rel {np.nanmax(diff / np.maximum(np.abs(want), 1e-300)):.3g}, "
                             f"{int(bad.sum())} bad, first at {first}: {got[first]!r} vs {want[first]!r}")



def run_python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "TINYGPT_KERNELS"}
    full_env.update(env)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", code], env=full_env, cwd=root, capture_output=True, text=True,
                          check=False)

