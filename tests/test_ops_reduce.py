"""Reductions sum mean max var over dim None / int / tuple with keepdim, plus the
non-differentiable argmax, topk and multinomial."""
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import strategies as S
import tinygpt as tg
from helpers import assert_close, check_op, fd_check

DT = pytest.mark.parametrize("dtype", S.DTYPES, ids=["f32", "f64"])
TORCH = settings(max_examples=50)
FD = settings(max_examples=25)
F64 = np.float64


@st.composite
def reduce_inputs(draw, dtype, domain="real", min_side=1):
    shape = draw(S.shapes(min_side=min_side))
    dim = draw(S.reduce_dims(len(shape)))
    keepdim = draw(st.booleans())
    return draw(S.arrays(shape, dtype, domain)), dim, keepdim


def _sum(dim, keepdim):
    if dim is None and not keepdim:
        return (lambda x: x.sum()), (lambda x: x.sum())
    return (lambda x: x.sum(dim=dim, keepdim=keepdim)), (lambda x: x.sum(dim=dim, keepdim=keepdim))


def _mean(dim, keepdim):
    if dim is None and not keepdim:
        return (lambda x: x.mean()), (lambda x: x.mean())
    return (lambda x: x.mean(dim=dim, keepdim=keepdim)), (lambda x: x.mean(dim=dim, keepdim=keepdim))


def _max(dim, keepdim):
    tg_fn = (lambda x: x.max()) if dim is None and not keepdim else \
        (lambda x: x.max(dim=dim, keepdim=keepdim))
    if dim is None:
        return tg_fn, (lambda x: torch.amax(x, dim=tuple(range(x.ndim)), keepdim=keepdim))
    return tg_fn, (lambda x: torch.amax(x, dim=dim, keepdim=keepdim))


def _var(dim, keepdim, unbiased):
    return ((lambda x: x.var(dim=dim, keepdim=keepdim, unbiased=unbiased)),
            (lambda x: torch.var(x, dim=dim, correction=int(unbiased), keepdim=keepdim)))


# ---- sum / mean (empty reductions included: torch gives 0 and NaN) -------------------------

@DT
@TORCH
@given(data=st.data())
def test_sum_torch(dtype, data):
    x, dim, keepdim = data.draw(reduce_inputs(dtype, min_side=0))
    check_op(*_sum(dim, keepdim), [x], name=f"sum(dim={dim}, keepdim={keepdim})")


@FD
@given(data=st.data())
def test_sum_fd(data):
    x, dim, keepdim = data.draw(reduce_inputs(F64))
    fd_check(_sum(dim, keepdim)[0], [x], name=f"sum(dim={dim}, keepdim={keepdim})")


@DT
@TORCH
@given(data=st.data())
def test_mean_torch(dtype, data):
    x, dim, keepdim = data.draw(reduce_inputs(dtype, min_side=0))
    check_op(*_mean(dim, keepdim), [x], name=f"mean(dim={dim}, keepdim={keepdim})")


@FD
@given(data=st.data())
def test_mean_fd(data):
    x, dim, keepdim = data.draw(reduce_inputs(F64))
    fd_check(_mean(dim, keepdim)[0], [x], name=f"mean(dim={dim}, keepdim={keepdim})")


# ---- max (distinct values: no ties, so the gradient is unique) -----------------------------

@DT
@TORCH
@given(data=st.data())
def test_max_torch(dtype, data):
    x, dim, keepdim = data.draw(reduce_inputs(dtype, "distinct"))
    check_op(*_max(dim, keepdim), [x], name=f"max(dim={dim}, keepdim={keepdim})")


@FD
@given(data=st.data())
def test_max_fd(data):
    x, dim, keepdim = data.draw(reduce_inputs(F64, "distinct"))
    fd_check(_max(dim, keepdim)[0], [x], name=f"max(dim={dim}, keepdim={keepdim})")


def test_max_returns_values_only():
    x = tg.tensor([[1.0, 5.0], [7.0, 2.0]])
    out = x.max(dim=1)
    assert isinstance(out, tg.Tensor)
    np.testing.assert_array_equal(out.data, np.array([5.0, 7.0], np.float32))


# ---- var, biased (the book's LayerNorm) and unbiased ---------------------------------------

@DT
@TORCH
@given(data=st.data())
def test_var_torch(dtype, data):
    x, dim, keepdim = data.draw(reduce_inputs(dtype))
    unbiased = data.draw(st.booleans())
    n = int(np.prod([x.shape[d] for d in S.normalize_dims(dim, x.ndim)]))
    assume(n >= 2 or not unbiased)  # n - 1 = 0 degrees of freedom: NaN/inf, tested below
    check_op(*_var(dim, keepdim, unbiased), [x], name=f"var(dim={dim}, keepdim={keepdim}, unbiased={unbiased})")


@FD
@given(data=st.data())
def test_var_fd(data):
    x, dim, keepdim = data.draw(reduce_inputs(F64))
    unbiased = data.draw(st.booleans())
    n = int(np.prod([x.shape[d] for d in S.normalize_dims(dim, x.ndim)]))
    assume(n >= 2 or not unbiased)
    fd_check(_var(dim, keepdim, unbiased)[0], [x], name=f"var(dim={dim}, unbiased={unbiased})")


def test_var_default_is_unbiased():
    x = np.array([1.0, 2.0, 4.0], np.float64)
    assert tg.Tensor(x).var().item() == pytest.approx(np.var(x, ddof=1), rel=1e-15)
    assert tg.Tensor(x).var(unbiased=False).item() == pytest.approx(np.var(x), rel=1e-15)


def test_var_single_element_unbiased_is_nan_like_torch():
    with np.errstate(all="ignore"):
        out = tg.Tensor(np.array([[3.0], [4.0]])).var(dim=1)
    assert np.isnan(out.data).all()


# ---- argmax / topk / multinomial (no gradients) --------------------------------------------

@settings(max_examples=40)
@given(data=st.data())
def test_argmax_torch(data):
    x = data.draw(S.arrays(data.draw(S.shapes(min_dims=1)), np.float32, "distinct"))
    dim = data.draw(st.none() | st.integers(-x.ndim, x.ndim - 1))
    keepdim = data.draw(st.booleans()) if dim is not None else False
    got = tg.argmax(tg.Tensor(x), dim=dim, keepdim=keepdim)
    want = torch.argmax(torch.from_numpy(x.copy()), dim=dim, keepdim=keepdim).numpy()
    assert_close(np.asarray(getattr(got, "data", got)), want, what=f"argmax(dim={dim}, keepdim={keepdim})")


@settings(max_examples=40)
@given(data=st.data())
def test_topk_torch(data):
    dtype = data.draw(S.dtypes())
    x = data.draw(S.arrays(data.draw(S.shapes(min_dims=1)), dtype, "distinct"))
    dim = data.draw(st.sampled_from([-1] + list(range(x.ndim))))
    k = data.draw(st.integers(1, x.shape[dim]))
    values, idx = tg.topk(tg.Tensor(x), k, dim=dim)
    want = torch.topk(torch.from_numpy(x.copy()), k, dim=dim)
    assert_close(values.data, want.values.numpy(), what=f"topk({k}, dim={dim}) values")
    assert_close(np.asarray(idx), want.indices.numpy(), what=f"topk({k}, dim={dim}) indices")


def test_multinomial_seeded_and_distributed():
    probs = np.array([[0.1, 0.2, 0.7], [0.5, 0.0, 0.5]], np.float32)
    draw = lambda: np.asarray(getattr(s := tg.multinomial(tg.Tensor(probs), num_samples=1), "data", s))
    tg.manual_seed(123)
    a = draw()
    tg.manual_seed(123)
    b = draw()
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 1) and a.dtype == np.int64
    tg.manual_seed(7)
    samples = np.concatenate([draw() for _ in range(3000)], axis=1)  # (2, 3000)
    assert not (samples[1] == 1).any(), "drew a zero-probability class"
    for row, p in zip(samples, probs):
        freq = np.bincount(row, minlength=3) / row.size
        sigma = np.sqrt(p * (1 - p) / row.size)
        assert np.all(np.abs(freq - p) <= 5 * sigma + 1e-12), (freq, p)


def test_multinomial_1d():
    tg.manual_seed(0)
    s = tg.multinomial(tg.Tensor(np.array([0.0, 0.0, 1.0], np.float32)), num_samples=1)
    s = np.asarray(getattr(s, "data", s))
    assert s.shape == (1,) and s[0] == 2
