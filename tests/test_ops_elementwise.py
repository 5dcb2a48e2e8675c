"""Elementwise ops: + - * / neg pow exp log sqrt tanh relu, where, masked_fill, comparisons.

Each differentiable op: `test_<op>_torch` (forward + every gradient vs PyTorch, float32 and
float64, broadcast shapes, non-contiguous inputs) and `test_<op>_fd` (float64 finite
differences, no torch).
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import strategies as S
import tinygpt as tg
from helpers import check_op, fd_check

DT = pytest.mark.parametrize("dtype", S.DTYPES, ids=["f32", "f64"])
TORCH = settings(max_examples=50)
FD = settings(max_examples=25)
F64 = np.float64


@st.composite
def binary(draw, dtype, domain_a="real", domain_b="real"):
    sa, sb = draw(S.broadcast_shapes(min_side=0))
    return draw(S.arrays(sa, dtype, domain_a)), draw(S.arrays(sb, dtype, domain_b))


@st.composite
def unary(draw, dtype, domain="real", bound=2.0):
    return draw(S.arrays(draw(S.shapes(min_side=0)), dtype, domain, bound=bound))


def add(a, b): return a + b
def sub(a, b): return a - b
def mul(a, b): return a * b
def div(a, b): return a / b
def pow_(a, b): return a ** b
def neg(x): return -x
def exp(x): return x.exp()
def log(x): return x.log()
def sqrt(x): return x.sqrt()
def tanh(x): return x.tanh()
def relu(x): return x.relu()


# ---- binary, tensor (op) tensor with broadcasting ------------------------------------------

@DT
@TORCH
@given(data=st.data())
def test_add_torch(dtype, data):
    check_op(add, add, data.draw(binary(dtype)))


@FD
@given(data=st.data())
def test_add_fd(data):
    fd_check(add, data.draw(binary(F64)))


@DT
@TORCH
@given(data=st.data())
def test_sub_torch(dtype, data):
    check_op(sub, sub, data.draw(binary(dtype)))


@FD
@given(data=st.data())
def test_sub_fd(data):
    fd_check(sub, data.draw(binary(F64)))


@DT
@TORCH
@given(data=st.data())
def test_mul_torch(dtype, data):
    check_op(mul, mul, data.draw(binary(dtype)))


@FD
@given(data=st.data())
def test_mul_fd(data):
    fd_check(mul, data.draw(binary(F64)))


@DT
@TORCH
@given(data=st.data())
def test_div_torch(dtype, data):
    check_op(div, div, data.draw(binary(dtype, "real", "nonzero")))


@FD
@given(data=st.data())
def test_div_fd(data):
    fd_check(div, data.draw(binary(F64, "real", "nonzero")))


@DT
@TORCH
@given(data=st.data())
def test_pow_torch(dtype, data):
    check_op(pow_, pow_, data.draw(binary(dtype, "positive", "real")), name="pow")


@FD
@given(data=st.data())
def test_pow_fd(data):
    fd_check(pow_, data.draw(binary(F64, "positive", "real")), name="pow")


def test_same_tensor_both_sides_torch():
    """x op x: both gradient contributions land on the same leaf."""
    x = np.random.default_rng(0).uniform(0.5, 2.0, (3, 4))
    for fn in (add, sub, mul, div, pow_):
        check_op(lambda t: fn(t, t), lambda t: fn(t, t), [x], name=f"{fn.__name__}(x, x)")


# ---- with a Python scalar on either side ---------------------------------------------------

SCALAR_OPS = {
    "add": (lambda x: x + 2.5, "real"),
    "radd": (lambda x: 2.5 + x, "real"),
    "sub": (lambda x: x - 1.5, "real"),
    "rsub": (lambda x: 1.5 - x, "real"),
    "mul": (lambda x: x * -0.7, "real"),
    "rmul": (lambda x: -0.7 * x, "real"),
    "div": (lambda x: x / 1.3, "real"),
    "rdiv": (lambda x: 1.3 / x, "nonzero"),
    "pow2": (lambda x: x ** 2, "real"),
    "pow3": (lambda x: x ** 3, "real"),
    "pow_int0": (lambda x: x ** 0, "real"),
    "pow_half": (lambda x: x ** 0.5, "positive"),
    "pow_neg": (lambda x: x ** -1.5, "positive"),
    "rpow": (lambda x: 2.0 ** x, "real"),
}


@pytest.mark.parametrize("op", list(SCALAR_OPS))
@DT
@settings(max_examples=20)
@given(data=st.data())
def test_scalar_binary_torch(op, dtype, data):
    """Python scalars adopt the tensor's dtype (float32 stays float32, checked by check_op)."""
    fn, domain = SCALAR_OPS[op]
    check_op(fn, fn, [data.draw(unary(dtype, domain))], name=op)


@pytest.mark.parametrize("op", list(SCALAR_OPS))
@settings(max_examples=10)
@given(data=st.data())
def test_scalar_binary_fd(op, data):
    fn, domain = SCALAR_OPS[op]
    fd_check(fn, [data.draw(unary(F64, domain))], name=op)


# ---- unary ---------------------------------------------------------------------------------

@DT
@TORCH
@given(data=st.data())
def test_neg_torch(dtype, data):
    check_op(neg, neg, [data.draw(unary(dtype))])


@FD
@given(data=st.data())
def test_neg_fd(data):
    fd_check(neg, [data.draw(unary(F64))])


@DT
@TORCH
@given(data=st.data())
def test_exp_torch(dtype, data):
    check_op(exp, exp, [data.draw(unary(dtype, bound=3.0))])


@FD
@given(data=st.data())
def test_exp_fd(data):
    fd_check(exp, [data.draw(unary(F64, bound=3.0))])


@DT
@TORCH
@given(data=st.data())
def test_log_torch(dtype, data):
    check_op(log, log, [data.draw(unary(dtype, "positive"))])


@FD
@given(data=st.data())
def test_log_fd(data):
    fd_check(log, [data.draw(unary(F64, "positive"))])


@DT
@TORCH
@given(data=st.data())
def test_sqrt_torch(dtype, data):
    check_op(sqrt, sqrt, [data.draw(unary(dtype, "positive"))])


@FD
@given(data=st.data())
def test_sqrt_fd(data):
    fd_check(sqrt, [data.draw(unary(F64, "positive"))])


@DT
@TORCH
@given(data=st.data())
def test_tanh_torch(dtype, data):
    check_op(tanh, tanh, [data.draw(unary(dtype, bound=3.0))])


@FD
@given(data=st.data())
def test_tanh_fd(data):
    fd_check(tanh, [data.draw(unary(F64, bound=3.0))])


@DT
@TORCH
@given(data=st.data())
def test_relu_torch(dtype, data):
    check_op(relu, relu, [data.draw(unary(dtype, "off_kink"))])


@FD
@given(data=st.data())
def test_relu_fd(data):
    fd_check(relu, [data.draw(unary(F64, "off_kink"))])


def test_unary_large_inputs_stay_finite():
    """exp overflows to inf like torch; tanh saturates without NaN; no float64 upcast."""
    x = np.array([-100.0, -20.0, 0.0, 20.0, 100.0], np.float32)
    with np.errstate(over="ignore"):  # exp(100) overflowing is the point (NumPy would warn)
        for fn in (exp, tanh, relu, neg):
            check_op(fn, fn, [x], forward_only=True)


# ---- where / masked_fill -------------------------------------------------------------------

@st.composite
def where_inputs(draw, dtype):
    sc, sa, sb = draw(S.broadcast_shapes(num=3))
    return draw(S.bool_masks(sc)), draw(S.arrays(sa, dtype)), draw(S.arrays(sb, dtype))


@DT
@TORCH
@given(data=st.data())
def test_where_torch(dtype, data):
    cond, a, b = data.draw(where_inputs(dtype))
    wrap = data.draw(st.booleans())  # cond as a bool Tensor or as a raw ndarray
    check_op(lambda c, x, y: tg.where(tg.Tensor(c) if wrap else c, x, y), torch.where,
             [cond, a, b], name="where")


@FD
@given(data=st.data())
def test_where_fd(data):
    fd_check(tg.where, list(data.draw(where_inputs(F64))), name="where")


@DT
@settings(max_examples=20)
@given(data=st.data())
def test_where_scalar_branch_torch(dtype, data):
    shape = data.draw(S.shapes())
    cond = data.draw(S.bool_masks(data.draw(S.broadcastable_to(shape))))
    a = data.draw(S.arrays(shape, dtype))
    check_op(lambda c, x: tg.where(c, x, 0.5), lambda c, x: torch.where(c, x, 0.5), [cond, a],
             name="where(c, x, 0.5)")
    check_op(lambda c, x: tg.where(c, -1.0, x), lambda c, x: torch.where(c, -1.0, x), [cond, a],
             name="where(c, -1.0, x)")


@st.composite
def masked_fill_inputs(draw, dtype):
    shape = draw(S.shapes())
    mask = draw(S.bool_masks(draw(S.broadcastable_to(shape))))
    return draw(S.arrays(shape, dtype)), mask


@DT
@TORCH
@given(data=st.data())
def test_masked_fill_torch(dtype, data):
    x, mask = data.draw(masked_fill_inputs(dtype))
    value = data.draw(st.sampled_from([float("-inf"), 0.0, -1e9, 2.5]))
    wrap = data.draw(st.booleans())
    check_op(lambda t, m: t.masked_fill(tg.Tensor(m) if wrap else m, value),
             lambda t, m: t.masked_fill(m, value), [x, mask], name=f"masked_fill({value})")


@FD
@given(data=st.data())
def test_masked_fill_fd(data):
    x, mask = data.draw(masked_fill_inputs(F64))
    fd_check(lambda t, m: t.masked_fill(m, -3.0), [x, mask], name="masked_fill")


# ---- comparisons: bool results, no graph ---------------------------------------------------

CMPS = {"lt": lambda a, b: a < b, "le": lambda a, b: a <= b, "gt": lambda a, b: a > b,
        "ge": lambda a, b: a >= b, "eq": lambda a, b: a == b, "ne": lambda a, b: a != b}


@pytest.mark.parametrize("op", list(CMPS))
@settings(max_examples=15)
@given(data=st.data())
def test_comparison_torch(op, data):
    fn = CMPS[op]
    a, b = data.draw(binary(np.float32))
    b = np.where(np.broadcast_to(data.draw(st.booleans()), b.shape), b, b.round())  # some ties
    a = a.round() if data.draw(st.booleans()) else a
    check_op(fn, fn, [a, b], forward_only=True, name=op)
    check_op(lambda x: fn(x, 0.5), lambda x: fn(x, 0.5), [a], forward_only=True, name=f"{op} scalar")
    out = fn(tg.Tensor(a, requires_grad=True), tg.Tensor(b, requires_grad=True))
    assert out.dtype == np.bool_ and not out.requires_grad
