"""__getitem__: ints, slices (empty and stepped), None, Ellipsis, integer arrays and lists.
The gradient is a scatter-add, so repeated indices must accumulate (x[[0, 2, 2]])."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import strategies as S
import tinygpt as tg
from helpers import assert_close, check_op, fd_check, torch_index

DT = pytest.mark.parametrize("dtype", S.DTYPES, ids=["f32", "f64"])
F64 = np.float64


@st.composite
def getitem_case(draw, dtype, allow_neg_step=False):
    x = draw(S.arrays(draw(S.shapes(max_side=5)), dtype))
    return x, draw(S.indices(x.shape, allow_neg_step=allow_neg_step))


@DT
@settings(max_examples=80)
@given(data=st.data())
def test_getitem_torch(dtype, data):
    x, idx = data.draw(getitem_case(dtype))
    check_op(lambda t: t[idx], lambda t: t[torch_index(idx)], [x], name=f"getitem[{idx!r}]")


@settings(max_examples=40)
@given(data=st.data())
def test_getitem_fd(data):
    x, idx = data.draw(getitem_case(F64, allow_neg_step=True))
    fd_check(lambda t: t[idx], [x], name=f"getitem[{idx!r}]")


@settings(max_examples=40)
@given(data=st.data())
def test_getitem_negative_step_numpy(data):
    """torch has no negative-step slices; NumPy is the reference for the forward."""
    x, idx = data.draw(getitem_case(F64, allow_neg_step=True))
    assert_close(tg.Tensor(x)[idx].data, x[idx], what=f"x[{idx!r}]")


CASES = {
    "last_token": (lambda: (slice(None), -1, slice(None)), (2, 5, 3)),
    "repeated_rows": (lambda: np.array([0, 2, 2]), (4, 3)),
    "repeated_list": (lambda: [1, 1, 1, 0], (3, 2)),
    "negative_array": (lambda: np.array([-1, 0, -1]), (3, 2)),
    "2d_index_array": (lambda: np.array([[0, 1], [1, 1]]), (2, 3)),
    "array_on_axis1": (lambda: (slice(None), np.array([2, 0, 2])), (2, 3, 2)),
    "ellipsis_array": (lambda: (Ellipsis, np.array([1, 1])), (2, 2, 3)),
    "newaxis": (lambda: (None, slice(None), None, 0), (3, 2)),
    "int_scalar": (lambda: (1, 2), (3, 4)),
    "empty_slice": (lambda: slice(3, 1), (4, 2)),
    "step_slice": (lambda: (slice(None, None, 2), slice(1, None, 3)), (5, 7)),
    "empty_array": (lambda: np.zeros((0,), np.int64), (3, 2)),
}


@pytest.mark.parametrize("case", list(CASES))
@DT
def test_getitem_cases_torch(case, dtype):
    make_idx, shape = CASES[case]
    idx = make_idx()
    x = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    check_op(lambda t: t[idx], lambda t: t[torch_index(idx)], [x], name=f"getitem {case}")
    if dtype == F64:
        fd_check(lambda t: t[idx], [x], name=f"getitem {case}")


def test_getitem_repeated_index_accumulates():
    x = tg.Tensor(np.arange(4.0), requires_grad=True)
    x[np.array([0, 2, 2, 2])].sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 0.0, 3.0, 0.0])

