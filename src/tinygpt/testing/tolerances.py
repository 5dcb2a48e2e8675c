"""The one tolerance table of tinygpt's checks, public so a user's own op is held to the same bounds.

Each bound reads  |actual - expected| <= atol * scale + rtol * |expected|,
scale = max(1, max |expected|)  (see `assert_close`).
"""
import numpy as np

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)

TOLERANCES = {
    # one op against PyTorch on the same inputs: a few float32 ulp apart (different but correct
    # summation orders); float64 tight enough that a wrong formula cannot hide in it
    "op": {F32: dict(rtol=1e-5, atol=1e-6), F64: dict(rtol=1e-10, atol=1e-12)},
    # a Numba kernel against its NumPy reference: fast-math reductions reassociate and the
    # polynomial exp is not libm's, hence twice "op" in float32; float64 agreement is the point
    "kernel": {F32: dict(rtol=2e-5, atol=2e-6), F64: dict(rtol=1e-10, atol=1e-12)},
    # a few optimizer steps (or a clip) against torch.optim: elementwise updates in the same
    # order as torch's, so tighter than "op"
    "optimizer": {F32: dict(rtol=2e-6, atol=2e-7), F64: dict(rtol=1e-12, atol=1e-14)},
    # a whole float32 model's logits against the transformers / book PyTorch model: layer on
    # layers of float32 rounding, judged against the largest logit (atol * scale, rtol 0)
    "model": {F32: dict(rtol=0.0, atol=1e-4), F64: dict(rtol=1e-10, atol=1e-12)},
    # float64 central differences (gradcheck): the step, the relative tolerance, and the
    # round-off allowance in units of machine epsilon times sum|out * dout| / step
    "finite_difference": {F64: dict(eps=1e-6, rtol=1e-6, roundoff=64)},
}


def tolerance(kind, dtype):
    """A copy of TOLERANCES[kind] for `dtype`, e.g. `assert_allclose(a, b, **tolerance("op", a.dtype))`."""
    return dict(TOLERANCES[kind][np.dtype(dtype)])


def ulps(dtype, n):
    """A bound of `n` units in the last place of `dtype` (rtol = n * eps, atol 0): for results that
    are one or two roundings away from exact, where a table entry would be far too loose."""
    return dict(rtol=n * float(np.finfo(dtype).eps), atol=0.0)
