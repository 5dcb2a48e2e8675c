"""matmul / @: 1-D and 2-D operands, batched with broadcast batch dims, empty dims, and
transposed / strided operands (a Linear layer multiplies by a transposed weight)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import strategies as S
import tinygpt as tg
from helpers import check_op, fd_check

DT = pytest.mark.parametrize("dtype", S.DTYPES, ids=["f32", "f64"])
F64 = np.float64


@st.composite
def matmul_shapes(draw, min_side=1):
    """Shapes (a, b) torch.matmul accepts: 1-D.1-D, 1-D.N-D, N-D.1-D, batched N-D.N-D."""
    m, k, n = (draw(st.integers(min_side, 5)) for _ in range(3))
    ba, bb = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2,
                                                    max_side=3)).input_shapes
    kind = draw(st.sampled_from(["vv", "vm", "mv", "mm", "mm", "mm"]))
    a = (k,) if kind[0] == "v" else (*ba, m, k)
    b = (k,) if kind[1] == "v" else (*bb, k, n)
    return a, b


@st.composite
def matmul_case(draw, dtype, min_side=1):
    sa, sb = draw(matmul_shapes(min_side))
    return draw(S.arrays(sa, dtype)), draw(S.arrays(sb, dtype))


def mm(a, b): return a @ b


@DT
@settings(max_examples=60)
@given(data=st.data())
def test_matmul_torch(dtype, data):
    a, b = data.draw(matmul_case(dtype, min_side=0))
    check_op(mm, mm, [a, b], name="a @ b")


@settings(max_examples=30)
@given(data=st.data())
def test_matmul_fd(data):
    fd_check(mm, list(data.draw(matmul_case(F64))), name="a @ b")


@DT
@settings(max_examples=20)
@given(data=st.data())
def test_matmul_function_torch(dtype, data):
    a, b = data.draw(matmul_case(dtype))
    check_op(tg.matmul, torch.matmul, [a, b], name="tg.matmul")


# Shapes big enough to reach a blocked / parallel kernel if the dispatch rule picks one:
# odd sizes around block edges, GPT-2-like (tokens, 768) x (768, 3*64) slices, a transposed B.
LARGE = [((1, 17), (17, 1)), ((63, 65), (65, 33)), ((130, 67), (67, 129)),
         ((2, 3, 65, 40), (40, 17)), ((4, 64, 96), (1, 96, 64)), ((128, 256), (256, 192))]


@pytest.mark.parametrize("shapes", LARGE, ids=[f"{a}x{b}" for a, b in LARGE])
@DT
def test_matmul_large_torch(shapes, dtype):
    sa, sb = shapes
    rng = np.random.default_rng(5)
    a = rng.uniform(-1, 1, sa).astype(dtype)
    b = rng.uniform(-1, 1, sb).astype(dtype)
    check_op(mm, mm, [a, b], name="a @ b (large)")
    bt = np.ascontiguousarray(np.swapaxes(b, -1, -2))  # b given as a transposed view
    check_op(mm, mm, [a, np.swapaxes(bt, -1, -2)], name="a @ b (large, b transposed view)")


def test_matmul_linear_layer_pattern_torch():
    """x @ W.T + b with W stored (out, in), as nn.Linear does it."""
    rng = np.random.default_rng(6)
    x, w, bias = rng.standard_normal((2, 5, 7)), rng.standard_normal((3, 7)), rng.standard_normal(3)
    for dtype in S.DTYPES:
        check_op(lambda x, w, b: x @ w.T + b, lambda x, w, b: x @ w.T + b,
                 [x.astype(dtype), w.astype(dtype), bias.astype(dtype)], name="x @ W.T + b")
    fd_check(lambda x, w, b: x @ w.T + b, [x, w, bias], name="x @ W.T + b")
