"""The rmsnorm Numba kernels against their NumPy reference (tinygpt/kernels/rmsnorm.py), whatever
TINYGPT_KERNELS says: odd sizes, three memory layouts, float32 and float64, one thread and many
chunks. The reference itself is checked against PyTorch through the RMSNorm op (test_every_op.py,
test_modern_ops.py run it under TINYGPT_KERNELS=numpy)."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from kernel_checks import DTYPES, LAYOUTS, NB, ODD, REF, SEEDS, check, fast, make
from tinygpt.kernels import _jit, layernorm, rmsnorm


def _compare(x, w, eps, dy, grad_scale):
    want = REF["rmsnorm_forward"](x, w, eps)
    got = NB["rmsnorm_forward"](x, w, eps)
    for name, g, r in zip(("y", "rstd"), got, want):
        assert g.dtype == x.dtype
        check(f"rmsnorm_forward {name}", g / (want[1] if name == "rstd" else 1),
              r / (want[1] if name == "rstd" else 1))
    for name, g, r in zip(("dx", "dscale"), NB["rmsnorm_backward"](dy, x, w, want[1]),
                          REF["rmsnorm_backward"](dy, x, w, want[1])):
        check(f"rmsnorm_backward {name}", g, r, scale=grad_scale)


@fast(60)
@given(n=ODD, d=ODD, layout=LAYOUTS, dtype=DTYPES, eps=st.sampled_from([1e-6, 1e-5]), seed=SEEDS)
def test_rmsnorm(n, d, layout, dtype, eps, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, (n, d), dtype, 2.0, layout)
    w, dy = make(rng, (d,), dtype), make(rng, (n, d), dtype, layout=layout)
    _compare(x, w, eps, dy, np.sqrt(n))


def test_rmsnorm_reference_against_torch():
    rng = np.random.default_rng(0)
    x, w, dy = rng.standard_normal((5, 17)), rng.standard_normal(17), rng.standard_normal((5, 17))
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = torch.nn.functional.rms_norm(tx, (17,), tw, eps=1e-6)
    y.backward(torch.tensor(dy))
    got, rstd = REF["rmsnorm_forward"](x, w, 1e-6)
    dx, dw = REF["rmsnorm_backward"](dy, x, w, rstd)
    for name, g, r in (("y", got, y), ("dx", dx, tx.grad), ("dscale", dw, tw.grad)):
        np.testing.assert_allclose(g, r.detach().numpy(), rtol=1e-12, atol=1e-12, err_msg=name)


def test_rmsnorm_in_many_chunks(monkeypatch):
    monkeypatch.setattr(layernorm, "MIN_ELEMS", 1)  # rmsnorm chunks its rows as layernorm does
    old = _jit.num_threads()
    _jit.set_num_threads(3)
    try:
        rng = np.random.default_rng(1)
        for dt in (np.float32, np.float64):
            x = make(rng, (37, 65), dt, 3.0)
            _compare(x, make(rng, (65,), dt), 1e-6, make(rng, x.shape, dt), 10.0)
    finally:
        _jit.set_num_threads(old)


def test_rmsnorm_kernels_need_2d():
    with pytest.raises(ValueError, match="2-D"):
        NB["rmsnorm_forward"](np.zeros(4, np.float32), np.ones(4, np.float32), 1e-6)
    with pytest.raises(ValueError, match="2-D"):
        NB["rmsnorm_backward"](np.zeros(4, np.float32), np.zeros(4, np.float32), np.ones(4, np.float32),
                               np.ones(1, np.float32))
