"""tinygpt.nn.functional's random ops: dropout and the attention softmax fused with its causal
mask and dropout (scaled_causal_softmax). Kernel-backed: run this file both with the default
kernels and with TINYGPT_KERNELS=numpy (the two backends must draw the same masks)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import strategies as S
import tinygpt as tg
import tinygpt.nn.functional as F
from helpers import assert_close, check_op, fd_check, ulps

DT = pytest.mark.parametrize("dtype", S.DTYPES, ids=["f32", "f64"])
TORCH = settings(max_examples=40)
FD = settings(max_examples=20)
F64 = np.float64

# ---- dropout -------------------------------------------------------------------------------

def _dropout_mask(shape, dtype, p, seed):
    tg.manual_seed(seed)
    return np.asarray(F.dropout(tg.Tensor(np.ones(shape, dtype)), p=p, training=True).data != 0)


@DT
@settings(max_examples=25)
@given(data=st.data())
def test_dropout_torch(dtype, data):
    """Given tinygpt's mask, forward and gradient equal torch's x * mask / (1 - p)."""
    x = data.draw(S.arrays(data.draw(S.shapes(min_side=1)), dtype, "nonzero"))
    p = data.draw(st.sampled_from([0.1, 0.5, 0.8]))
    seed = data.draw(st.integers(0, 1000))
    mask = _dropout_mask(x.shape, dtype, p, seed)

    def tg_fn(t):
        tg.manual_seed(seed)
        return F.dropout(t, p=p, training=True)

    check_op(tg_fn, lambda t: t * torch.from_numpy(mask.astype(dtype)) / (1 - p), [x], name=f"dropout({p})")


@FD
@given(data=st.data())
def test_dropout_fd(data):
    x = data.draw(S.arrays(data.draw(S.shapes(min_side=1)), F64))
    p = data.draw(st.sampled_from([0.1, 0.5, 0.8]))

    def tg_fn(t):
        tg.manual_seed(11)  # the same mask in every evaluation
        return F.dropout(t, p=p, training=True)

    fd_check(tg_fn, [x], name=f"dropout({p})")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@DT
def test_dropout_statistics_and_inverted_scaling(p, dtype):
    tg.manual_seed(0)
    n = 200_000
    out = F.dropout(tg.Tensor(np.ones(n, dtype)), p=p, training=True)
    assert out.dtype == dtype
    dropped = float(np.mean(out.data == 0))
    assert abs(dropped - p) <= 5 * math.sqrt(p * (1 - p) / n), f"dropped {dropped:.4f}, p={p}"
    kept = out.data[out.data != 0]
    assert_close(kept, np.full(kept.shape, 1.0 / (1.0 - p), dtype), what="kept values x/(1-p)",
                 tol=ulps(dtype, 2))


@DT
def test_dropout_eval_is_identity(dtype):
    x = np.random.default_rng(7).standard_normal((3, 4)).astype(dtype)
    for kwargs in (dict(p=0.5, training=False), dict(p=0.0, training=True)):
        t = tg.Tensor(x, requires_grad=True)
        out = F.dropout(t, **kwargs)
        np.testing.assert_array_equal(out.data, x)
        assert out.dtype == dtype
        dout = np.random.default_rng(8).standard_normal(x.shape).astype(dtype)
        (out * tg.Tensor(dout)).sum().backward()
        np.testing.assert_array_equal(t.grad, dout)


@DT
def test_dropout_p_one_gives_zeros_not_nan(dtype):
    """torch: p=1 drops everything; inverted scaling must not compute 0 * inf."""
    x = np.random.default_rng(9).standard_normal((3, 4)).astype(dtype)
    t = tg.Tensor(x, requires_grad=True)
    with np.errstate(all="ignore"):
        out = F.dropout(t, p=1.0, training=True)
        out.sum().backward()
    np.testing.assert_array_equal(out.data, np.zeros_like(x))
    np.testing.assert_array_equal(t.grad, np.zeros_like(x))


def test_dropout_seeded_reproducibility():
    x = tg.Tensor(np.ones((64, 64), np.float32))
    tg.manual_seed(42)
    a = F.dropout(x, p=0.5).data
    b = F.dropout(x, p=0.5).data
    tg.manual_seed(42)
    c = F.dropout(x, p=0.5).data
    tg.manual_seed(43)
    d = F.dropout(x, p=0.5).data
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b), "two calls after one seed drew the same mask"
    assert not np.array_equal(a, d), "different seeds drew the same mask"


@DT
def test_dropout_gradient_is_mask_times_scale(dtype):
    p = 0.3
    x = np.random.default_rng(10).uniform(0.5, 1.5, (5, 7)).astype(dtype)  # no zeros in x
    t = tg.Tensor(x, requires_grad=True)
    tg.manual_seed(5)
    out = F.dropout(t, p=p, training=True)
    dout = np.random.default_rng(11).standard_normal(x.shape).astype(dtype)
    (out * tg.Tensor(dout)).sum().backward()
    mask = out.data != 0
    assert 0 < mask.sum() < mask.size
    want = (mask * dout / dtype(1 - p)).astype(dtype)
    assert_close(t.grad, want, what="dropout grad = mask * dout / (1-p)",
                 tol=ulps(dtype, 4))


# ---- scaled_causal_softmax -----------------------------------------------------------------

def torch_causal_softmax(s, scale):
    tq, tk = s.shape[-2:]
    mask = torch.triu(torch.ones(tq, tk, dtype=torch.bool), diagonal=tk - tq + 1)
    return (scale * s).masked_fill(mask, float("-inf")).softmax(-1)


@st.composite
def causal_case(draw, dtype):
    lead, tq, tk = draw(S.attention_shapes())
    scale = draw(st.sampled_from([1.0, 0.125, 1 / math.sqrt(3), 2.0]))
    return draw(S.arrays((*lead, tq, tk), dtype, bound=3.0)), scale


@DT
@TORCH
@given(data=st.data())
def test_scaled_causal_softmax_torch(dtype, data):
    s, scale = data.draw(causal_case(dtype))
    check_op(lambda t: F.scaled_causal_softmax(t, scale), lambda t: torch_causal_softmax(t, scale), [s],
             name=f"scaled_causal_softmax({scale:.4g})")


@FD
@given(data=st.data())
def test_scaled_causal_softmax_fd(data):
    s, scale = data.draw(causal_case(F64))
    fd_check(lambda t: F.scaled_causal_softmax(t, scale), [s], name=f"scaled_causal_softmax({scale:.4g})")


@DT
@TORCH
@given(data=st.data())
def test_scaled_causal_softmax_dropout_torch(dtype, data):
    """With dropout_p, the op equals torch's softmax followed by x * mask / (1 - p), given the mask
    F.dropout draws from the same seed (the fused kernel hashes positions the same way)."""
    s, scale = data.draw(causal_case(dtype))
    p = data.draw(st.sampled_from([0.1, 0.5]))
    seed = data.draw(st.integers(0, 1000))
    mask = torch.from_numpy(_dropout_mask(s.shape, dtype, p, seed).astype(dtype))

    def tg_fn(t):
        tg.manual_seed(seed)
        return F.scaled_causal_softmax(t, scale, dropout_p=p)

    check_op(tg_fn, lambda t: torch_causal_softmax(t, scale) * mask / (1 - p), [s],
             name=f"scaled_causal_softmax({scale:.4g}, dropout_p={p})")


@FD
@given(data=st.data())
def test_scaled_causal_softmax_dropout_fd(data):
    s, scale = data.draw(causal_case(F64))

    def tg_fn(t):
        tg.manual_seed(5)  # the same mask in every evaluation
        return F.scaled_causal_softmax(t, scale, dropout_p=0.3)

    fd_check(tg_fn, [s], name=f"scaled_causal_softmax({scale:.4g}, dropout_p=0.3)")


def test_scaled_causal_softmax_rejects_a_bad_dropout_p():
    with pytest.raises(ValueError, match="dropout probability"):
        F.scaled_causal_softmax(tg.Tensor(np.zeros((2, 2), np.float32)), 1.0, dropout_p=1.5)


@pytest.mark.parametrize("shape", [(2, 12, 64, 64), (1, 3, 1, 17), (2, 4, 33, 65)])
@DT
def test_scaled_causal_softmax_large_torch(shape, dtype):
    """GPT-2-like sizes (a parallel kernel may only kick in here); Tk > Tq is the KV-cache case."""
    s = np.random.default_rng(13).standard_normal(shape).astype(dtype)
    scale = 1 / math.sqrt(64)
    check_op(lambda t: F.scaled_causal_softmax(t, scale), lambda t: torch_causal_softmax(t, scale), [s],
             name="scaled_causal_softmax large")
