"""Shape ops: reshape view flatten transpose permute unsqueeze squeeze contiguous .T cat stack,
and tril/triu.

These are where layout bugs live (a reshape of a transposed view must copy in the right
order; its gradient must be un-reshaped back into the view's shape), so every input is drawn
in a random memory layout.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import strategies as S
import tinygpt as tg
from helpers import check_op, fd_check
from tinygpt.errors import InputError

DT = pytest.mark.parametrize("dtype", S.DTYPES, ids=["f32", "f64"])
TORCH = settings(max_examples=50)
FD = settings(max_examples=20)
F64 = np.float64


@st.composite
def array(draw, dtype, min_dims=0, min_side=1):
    return draw(S.arrays(draw(S.shapes(min_dims=min_dims, min_side=min_side)), dtype))


# ---- reshape / view -------------------------------------------------------------------------

@st.composite
def reshape_case(draw, dtype):
    x = draw(array(dtype, min_side=0))
    return x, draw(S.reshape_targets(x.shape))


@DT
@TORCH
@given(data=st.data())
def test_reshape_torch(dtype, data):
    x, shape = data.draw(reshape_case(dtype))
    star = data.draw(st.booleans())  # reshape(2, 3) and reshape((2, 3))
    tg_fn = (lambda t: t.reshape(*shape)) if star and shape else (lambda t: t.reshape(shape))
    check_op(tg_fn, lambda t: t.reshape(shape), [x], name=f"reshape{shape}")


@FD
@given(data=st.data())
def test_reshape_fd(data):
    x, shape = data.draw(reshape_case(F64))
    fd_check(lambda t: t.reshape(shape), [x], name=f"reshape{shape}")


@DT
@TORCH
@given(data=st.data())
def test_view_torch(dtype, data):
    x, shape = data.draw(reshape_case(dtype))
    shape = shape or (1,)
    # torch.view needs compatible strides; torch gets a contiguous copy, tinygpt the view
    check_op(lambda t: t.view(*shape), lambda t: t.view(*shape), [x], name=f"view{shape}")


@FD
@given(data=st.data())
def test_view_fd(data):
    x, shape = data.draw(reshape_case(F64))
    shape = shape or (1,)
    fd_check(lambda t: t.view(*shape), [x], name=f"view{shape}")


# ---- flatten --------------------------------------------------------------------------------

@st.composite
def flatten_case(draw, dtype):
    x = draw(array(dtype, min_dims=1, min_side=0))
    n = x.ndim
    start = draw(st.integers(-n, n - 1))
    end = draw(st.integers(start % n, n - 1))
    if draw(st.booleans()):
        end -= n
    return x, start, end


@DT
@TORCH
@given(data=st.data())
def test_flatten_torch(dtype, data):
    x, start, end = data.draw(flatten_case(dtype))
    fn = lambda t: t.flatten(start, end)
    check_op(fn, fn, [x], name=f"flatten({start}, {end})")


@FD
@given(data=st.data())
def test_flatten_fd(data):
    x, start, end = data.draw(flatten_case(F64))
    fd_check(lambda t: t.flatten(start, end), [x], name=f"flatten({start}, {end})")


def test_flatten_defaults_torch():
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    check_op(lambda t: t.flatten(), lambda t: t.flatten(), [x], name="flatten()")
    check_op(lambda t: t.flatten(1), lambda t: t.flatten(1), [x], name="flatten(1)")


# ---- transpose / permute / .T -------------------------------------------------------------

@st.composite
def transpose_case(draw, dtype):
    x = draw(array(dtype, min_dims=1))
    n = x.ndim
    return x, draw(st.integers(-n, n - 1)), draw(st.integers(-n, n - 1))


@DT
@TORCH
@given(data=st.data())
def test_transpose_torch(dtype, data):
    x, d0, d1 = data.draw(transpose_case(dtype))
    fn = lambda t: t.transpose(d0, d1)
    check_op(fn, fn, [x], name=f"transpose({d0}, {d1})")


@FD
@given(data=st.data())
def test_transpose_fd(data):
    x, d0, d1 = data.draw(transpose_case(F64))
    fd_check(lambda t: t.transpose(d0, d1), [x], name=f"transpose({d0}, {d1})")


@st.composite
def permute_case(draw, dtype):
    x = draw(array(dtype, min_dims=1))  # torch has no permute() with zero dims
    perm = draw(st.permutations(range(x.ndim)))
    perm = [p - x.ndim if draw(st.booleans()) else p for p in perm]
    return x, tuple(perm)


@DT
@TORCH
@given(data=st.data())
def test_permute_torch(dtype, data):
    x, perm = data.draw(permute_case(dtype))
    check_op(lambda t: t.permute(*perm), lambda t: t.permute(*perm), [x], name=f"permute{perm}")


@FD
@given(data=st.data())
def test_permute_fd(data):
    x, perm = data.draw(permute_case(F64))
    fd_check(lambda t: t.permute(*perm), [x], name=f"permute{perm}")


@DT
@settings(max_examples=25)
@given(data=st.data())
def test_T_torch(dtype, data):
    x = data.draw(S.arrays(data.draw(S.shapes(min_dims=2, max_dims=2)), dtype))
    check_op(lambda t: t.T, lambda t: t.T, [x], name=".T")


@settings(max_examples=15)
@given(data=st.data())
def test_T_fd(data):
    x = data.draw(S.arrays(data.draw(S.shapes(min_dims=2, max_dims=2)), F64))
    fd_check(lambda t: t.T, [x], name=".T")


# ---- unsqueeze / squeeze / contiguous ------------------------------------------------------

@st.composite
def unsqueeze_case(draw, dtype):
    x = draw(array(dtype))
    return x, draw(st.integers(-x.ndim - 1, x.ndim))


@DT
@TORCH
@given(data=st.data())
def test_unsqueeze_torch(dtype, data):
    x, d = data.draw(unsqueeze_case(dtype))
    check_op(lambda t: t.unsqueeze(d), lambda t: t.unsqueeze(d), [x], name=f"unsqueeze({d})")


@FD
@given(data=st.data())
def test_unsqueeze_fd(data):
    x, d = data.draw(unsqueeze_case(F64))
    fd_check(lambda t: t.unsqueeze(d), [x], name=f"unsqueeze({d})")


@st.composite
def squeeze_case(draw, dtype):
    shape = draw(S.shapes(max_side=2))  # many size-1 dims
    x = draw(S.arrays(shape, dtype))
    d = draw(st.none() | st.integers(-x.ndim, x.ndim - 1)) if x.ndim else None
    return x, d


@DT
@TORCH
@given(data=st.data())
def test_squeeze_torch(dtype, data):
    x, d = data.draw(squeeze_case(dtype))
    fn = (lambda t: t.squeeze()) if d is None else (lambda t: t.squeeze(d))
    check_op(fn, fn, [x], name=f"squeeze({d})")


@FD
@given(data=st.data())
def test_squeeze_fd(data):
    x, d = data.draw(squeeze_case(F64))
    fn = (lambda t: t.squeeze()) if d is None else (lambda t: t.squeeze(d))
    fd_check(fn, [x], name=f"squeeze({d})")


@DT
@TORCH
@given(data=st.data())
def test_contiguous_torch(dtype, data):
    x = data.draw(array(dtype))
    out = tg.Tensor(x).contiguous()
    assert out.data.flags.c_contiguous, f"contiguous() of {x.strides} gave strides {out.data.strides}"
    check_op(lambda t: t.contiguous(), lambda t: t.contiguous(), [x], name="contiguous")


@FD
@given(data=st.data())
def test_contiguous_fd(data):
    fd_check(lambda t: t.contiguous(), [data.draw(array(F64))], name="contiguous")


@DT
@settings(max_examples=30)
@given(data=st.data())
def test_transpose_then_reshape_torch(dtype, data):
    """The classic layout bug: reshape of a transposed (non-contiguous) intermediate."""
    x = data.draw(S.arrays(data.draw(S.shapes(min_dims=2)), dtype))
    shape = data.draw(S.reshape_targets(x.shape)) or (1,)
    fn = lambda t: (t.transpose(0, -1) * 2.0).reshape(shape)
    gn = lambda t: t.transpose(0, -1).contiguous().view(*shape) * 2.0
    check_op(fn, fn, [x], name="transpose+reshape")
    check_op(gn, gn, [x], name="transpose+contiguous+view")


# ---- cat / stack ----------------------------------------------------------------------------

@st.composite
def cat_case(draw, dtype):
    shape = list(draw(S.shapes(min_dims=1)))
    n = len(shape)
    dim = draw(st.integers(-n, n - 1))
    k = draw(st.integers(1, 4))
    arrays = []
    for _ in range(k):
        shape[dim] = draw(st.integers(0, 3))
        arrays.append(draw(S.arrays(tuple(shape), dtype)))
    return arrays, dim


@DT
@TORCH
@given(data=st.data())
def test_cat_torch(dtype, data):
    arrays, dim = data.draw(cat_case(dtype))
    check_op(lambda *ts: tg.cat(list(ts), dim=dim), lambda *ts: torch.cat(ts, dim=dim), arrays,
             name=f"cat(dim={dim})")


@FD
@given(data=st.data())
def test_cat_fd(data):
    arrays, dim = data.draw(cat_case(F64))
    fd_check(lambda *ts: tg.cat(list(ts), dim=dim), arrays, name=f"cat(dim={dim})")


@st.composite
def stack_case(draw, dtype):
    shape = draw(S.shapes(max_dims=3))
    k = draw(st.integers(1, 4))
    dim = draw(st.integers(-len(shape) - 1, len(shape)))
    return [draw(S.arrays(shape, dtype)) for _ in range(k)], dim


@DT
@TORCH
@given(data=st.data())
def test_stack_torch(dtype, data):
    arrays, dim = data.draw(stack_case(dtype))
    check_op(lambda *ts: tg.stack(list(ts), dim=dim), lambda *ts: torch.stack(ts, dim=dim), arrays,
             name=f"stack(dim={dim})")


@FD
@given(data=st.data())
def test_stack_fd(data):
    arrays, dim = data.draw(stack_case(F64))
    fd_check(lambda *ts: tg.stack(list(ts), dim=dim), arrays, name=f"stack(dim={dim})")


def test_cat_same_tensor_twice_torch():
    x = np.random.default_rng(1).standard_normal((2, 3))
    check_op(lambda t: tg.cat([t, t * 2.0], dim=1), lambda t: torch.cat([t, t * 2.0], dim=1), [x],
             name="cat([x, 2x])")


# ---- tril / triu (the Triangle op: the gradient keeps the same triangle) -------------------

@st.composite
def triangle_case(draw, dtype):
    """x of 2-4 dims (the triangle is taken in the last two, maybe empty ones), a diagonal that
    may fall outside the matrix, and which triangle."""
    x = draw(array(dtype, min_dims=2, min_side=0))
    return x, draw(st.integers(-4, 4)), draw(st.sampled_from(["tril", "triu"]))


@DT
@TORCH
@given(data=st.data())
def test_tril_triu_torch(dtype, data):
    x, diagonal, which = data.draw(triangle_case(dtype))
    check_op(lambda t: getattr(tg, which)(t, diagonal=diagonal),
             lambda t: getattr(torch, which)(t, diagonal=diagonal), [x], name=f"{which}({diagonal})")


@FD
@given(data=st.data())
def test_tril_triu_fd(data):
    x, diagonal, which = data.draw(triangle_case(F64))
    fd_check(lambda t: getattr(tg, which)(t, diagonal=diagonal), [x], name=f"{which}({diagonal})")


@pytest.mark.parametrize("which", ["tril", "triu"])
def test_tril_triu_need_two_dims_like_torch(which):
    with pytest.raises(RuntimeError):
        getattr(torch, which)(torch.arange(3.0))
    with pytest.raises(InputError, match=r"\(3,\)"):  # the message names the shape
        getattr(tg, which)(tg.Tensor(np.arange(3.0), requires_grad=True))
