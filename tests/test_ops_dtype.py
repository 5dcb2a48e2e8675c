"""Dtype casts: `.to(dtype)`, `.float()`, `.double()` (the Cast op). The value is kept (rounded to
the new dtype) and the gradient comes back in the input's dtype, as in PyTorch."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import strategies as S
import tinygpt as tg
from helpers import check_op, fd_check
from tinygpt.errors import InputTypeError
from tinygpt.ops.elementwise import Cast

F32, F64 = np.float32, np.float64
TORCH_DTYPE = {F32: torch.float32, F64: torch.float64}
TORCH = settings(max_examples=40)
FD = settings(max_examples=20)

# (tinygpt call, torch call) for each way to ask for a dtype
METHODS = {
    "to": (lambda t, dtype: t.to(dtype), lambda t, dtype: t.to(TORCH_DTYPE[dtype])),
    "float/double": (lambda t, dtype: t.float() if dtype == F32 else t.double(),
                     lambda t, dtype: t.float() if dtype == F32 else t.double()),
}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("source,target", [(F32, F64), (F64, F32)], ids=["f32->f64", "f64->f32"])
@TORCH
@given(data=st.data())
def test_cast_torch(method, source, target, data):
    """Forward (rounded to float32 on the way down), output dtype, and the gradient's dtype and
    values; a scale after the cast makes the cotangent reaching Cast differ from dout."""
    x = data.draw(S.arrays(data.draw(S.shapes(min_side=0)), source))
    tg_cast, torch_cast = METHODS[method]
    check_op(lambda t: tg_cast(t, target) * 1.5, lambda t: torch_cast(t, target) * 1.5, [x],
             name=f"{method}({np.dtype(target)}) * 1.5")


@TORCH
@given(data=st.data())
def test_cast_round_trip_inside_a_graph_torch(data):
    """float64 -> float32 -> float64 in the middle of a graph: two Cast nodes, each gradient cast
    back. Only exact float32 arithmetic (x 2) on the float32 leg, so its one rounding (the cast
    itself, to nearest in both libraries) is all the two can differ by: compared at float64 bounds."""
    x = data.draw(S.arrays(data.draw(S.shapes(min_side=0)), F64))
    check_op(lambda t: (t.float() * 2.0).double() * t, lambda t: (t.float() * 2.0).double() * t, [x],
             name="double(float(x) * 2) * x")


@FD
@given(data=st.data())
def test_cast_fd(data):
    """The Function itself, float64 -> float64. Central differences need float64 end to end: a
    float32 leg rounds x + eps*v by ~6e-8, which over the 2e-6 step is a 3% error; and the public
    `.to(x.dtype)` records no op at all (it returns x, as torch does). The dtype-changing casts
    are checked against torch above."""
    x = data.draw(S.arrays(data.draw(S.shapes(min_side=0)), F64))
    fd_check(lambda t: Cast.apply(t, dtype=np.dtype(F64)) * t, [x], name="Cast(x, float64) * x")


@pytest.mark.parametrize("dtype", [F32, F64])
def test_cast_to_the_same_dtype_returns_the_tensor_like_torch(dtype):
    x = tg.Tensor(np.ones(3, dtype), requires_grad=True)
    xt = torch.ones(3, dtype=TORCH_DTYPE[dtype], requires_grad=True)
    assert xt.to(TORCH_DTYPE[dtype]) is xt and xt.float().dtype == torch.float32
    assert x.to(dtype) is x
    assert (x.float() is x) == (dtype == F32) and (x.double() is x) == (dtype == F64)


def test_cast_of_a_constant_records_nothing():
    y = tg.Tensor(np.ones(3, F32)).double()
    assert y.dtype == F64 and not y.requires_grad and y._ctx is None


def test_cast_to_an_integer_dtype_is_not_differentiable_like_torch():
    values = np.array([1.7, -2.2])
    yt = torch.tensor(values, requires_grad=True).to(torch.int64)
    y = tg.Tensor(values, requires_grad=True).to(np.int64)
    np.testing.assert_array_equal(y.data, yt.numpy())
    assert y.dtype == np.int64 and yt.requires_grad is False
    assert y.requires_grad is False, "an int64 tensor requires grad"


# Type promotion of the arithmetic operators, where NumPy's rules differ from torch's (int64 with
# float32 is float64 in NumPy, float32 in torch; int / int is float64 in NumPy, float32 in torch;
# torch refuses subtraction with a bool)
PROMOTION_VALUES = {"int64": [3, -4], "bool": [True, True], "float32": [1.5, -2.0], "float64": [1.5, -2.0]}
OPERATORS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
             "/": lambda a, b: a / b}


def _outcome(make, a, b, op):
    """The result's dtype name and values, or "refused"."""
    try:
        out = OPERATORS[op](make(*a) if isinstance(a, tuple) else a, make(*b) if isinstance(b, tuple) else b)
    except (RuntimeError, TypeError, ValueError):
        return "refused", None
    data = out.data if isinstance(out, tg.Tensor) else out.numpy()
    return str(data.dtype), data


SIDES = list(PROMOTION_VALUES) + [2, 2.5, True]  # tensors by dtype name, then Python scalars
PAIRS = [(a, b) for a in SIDES for b in SIDES if isinstance(a, str) or isinstance(b, str)]


@pytest.mark.parametrize("op", OPERATORS)
@pytest.mark.parametrize("left, right", PAIRS)
def test_arithmetic_promotes_dtypes_as_torch_does(left, right, op):
    """Every pair of int64/bool/float32/float64 tensors and Python int/float/bool scalars (at least
    one side a tensor): the same dtype as torch's result, the same values, or refused by both."""
    operand = {side: (PROMOTION_VALUES[side], side) if isinstance(side, str) else side for side in (left, right)}
    ours = _outcome(lambda v, d: tg.tensor(np.array(v, dtype=d)), operand[left], operand[right], op)
    theirs = _outcome(lambda v, d: torch.tensor(v, dtype=getattr(torch, d)), operand[left], operand[right], op)
    assert ours[0] == theirs[0]
    if ours[1] is not None:
        np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6)


def test_only_float32_and_float64_are_float_targets():
    """float16 (or any other float width) is refused by name instead of giving a tensor or model
    that the kernels and tolerances were never written for; integer targets stay constants."""
    x = tg.tensor([1.0, 2.5], requires_grad=True)
    with pytest.raises(InputTypeError, match="float32 or float64"):
        x.to(np.float16)
    assert x.to(np.int64).dtype == np.int64
    layer = tg.nn.Linear(2, 3)
    for dtype in (np.float16, np.int64):
        with pytest.raises(InputTypeError, match="float32 or float64"):
            layer.to(dtype)
    assert layer.weight.dtype == np.float32
