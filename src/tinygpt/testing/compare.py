"""`assert_close`: shape, then dtype, then values, with a report that says where and by how much."""
import numpy as np

from .tolerances import TOLERANCES


def check(condition, message) -> None:
    """`assert`, but kept under `python -O`: a check that a user runs must not vanish."""
    if not condition:
        raise AssertionError(message)


def describe(x):
    """A one-line description of an input: an ndarray's shape, dtype, strides and layout."""
    if isinstance(x, np.ndarray):
        layout = "C" if x.flags.c_contiguous else "F" if x.flags.f_contiguous else "view"
        return f"ndarray{x.shape} {x.dtype} strides={x.strides} {layout}"
    return repr(x)


def _check_exact(actual, expected, what):
    bad = actual != expected
    if bad.any():
        idx = [tuple(int(i) for i in t) for t in np.argwhere(bad)[:5]]
        raise AssertionError(f"{what}: {bad.sum()} of {bad.size} differ; first at {idx}: "
                             f"{[actual[i] for i in idx]} vs expected {[expected[i] for i in idx]}")


def assert_close(actual, expected, *, what="", tol=None, scale=1.0):
    """Shape, then dtype, then values (NaN and inf must sit at the same places).
    `tol` ({"rtol", "atol"}) defaults to TOLERANCES["op"] for expected's dtype; integer and bool
    arrays must match exactly. atol is relative to max(scale, max |expected|): pass the magnitude
    of the op's intermediate terms as `scale` when the result is a cancellation of larger terms."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    check(actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}")
    check(actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype}, expected {expected.dtype}")
    if expected.dtype.kind not in "fc":
        return _check_exact(actual, expected, what)
    tol = tol or TOLERANCES["op"][expected.dtype]
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    inf_mismatch = (np.isinf(a) | np.isinf(e)) & (a != e)
    finite = np.isfinite(a) & np.isfinite(e)
    scale = max(1.0, scale, float(np.abs(e[finite]).max()) if finite.any() else 1.0)
    with np.errstate(invalid="ignore"):  # inf - inf where both are inf: masked by `finite`
        err = np.where(finite, np.abs(a - e), 0.0)
    bound = tol["atol"] * scale + tol["rtol"] * np.abs(np.where(finite, e, 0.0))
    bad = (nan_a != nan_e) | inf_mismatch | (finite & (err > bound))
    if bad.any():
        rel = err / np.maximum(np.abs(e), 1e-300)
        idx = [tuple(int(i) for i in t) for t in np.argwhere(bad)[:5]]
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} values differ "
            f"(rtol={tol['rtol']:g}, atol={tol['atol']:g}*{scale:.3g})\n"
            f"  max abs diff {err.max():.3e}, max rel diff {rel[finite].max() if finite.any() else 0:.3e}\n"
            f"  NaN mismatches {int((nan_a != nan_e).sum())}, inf mismatches {int(inf_mismatch.sum())}\n"
            f"  first bad indices {idx}\n"
            f"  actual   {[a[i] for i in idx]}\n  expected {[e[i] for i in idx]}")
