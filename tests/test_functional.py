"""tinygpt.nn.functional's deterministic ops: softmax, log_softmax, gelu, layer_norm,
cross_entropy, embedding, linear (dropout and scaled_causal_softmax: test_functional_dropout.py).
These are the kernel-backed ops: run this file both with the default kernels and with
TINYGPT_KERNELS=numpy."""

import numpy as np
import pytest
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import strategies as S
import tinygpt as tg
import tinygpt.nn.functional as F
from helpers import assert_close, check_op, fd_check

DT = pytest.mark.parametrize("dtype", S.DTYPES, ids=["f32", "f64"])
TORCH = settings(max_examples=40)
FD = settings(max_examples=20)
F64 = np.float64


# ---- softmax / log_softmax -----------------------------------------------------------------

@st.composite
def softmax_case(draw, dtype):
    shape = draw(S.shapes(min_dims=1, max_side=6))
    x = draw(S.arrays(shape, dtype, bound=5.0))
    if draw(st.booleans()):
        x = x + dtype(draw(st.sampled_from([30.0, -60.0])))  # stability: a large common offset
    return x, draw(st.integers(-len(shape), len(shape) - 1))


@DT
@TORCH
@given(data=st.data())
def test_softmax_torch(dtype, data):
    x, dim = data.draw(softmax_case(dtype))
    method = data.draw(st.booleans())
    tg_fn = (lambda t: t.softmax(dim)) if method else (lambda t: F.softmax(t, dim=dim))
    check_op(tg_fn, lambda t: TF.softmax(t, dim=dim), [x], name=f"softmax(dim={dim})")


@FD
@given(data=st.data())
def test_softmax_fd(data):
    x, dim = data.draw(softmax_case(F64))
    fd_check(lambda t: F.softmax(t, dim=dim), [x], name=f"softmax(dim={dim})")


@DT
@TORCH
@given(data=st.data())
def test_log_softmax_torch(dtype, data):
    x, dim = data.draw(softmax_case(dtype))
    method = data.draw(st.booleans())
    tg_fn = (lambda t: t.log_softmax(dim)) if method else (lambda t: F.log_softmax(t, dim=dim))
    check_op(tg_fn, lambda t: TF.log_softmax(t, dim=dim), [x], name=f"log_softmax(dim={dim})")


@FD
@given(data=st.data())
def test_log_softmax_fd(data):
    x, dim = data.draw(softmax_case(F64))
    fd_check(lambda t: F.log_softmax(t, dim=dim), [x], name=f"log_softmax(dim={dim})")


@DT
def test_softmax_extreme_inputs_torch(dtype):
    """Numerically stable: no overflow at +1000, no NaN from -inf entries (masked scores)."""
    x = np.array([[1000.0, 0.0, -1000.0], [-np.inf, 2.0, 1.0], [88.0, 89.0, 90.0]], dtype)
    check_op(lambda t: F.softmax(t, dim=-1), lambda t: TF.softmax(t, dim=-1), [x], name="softmax extreme")
    check_op(lambda t: F.log_softmax(t, dim=-1), lambda t: TF.log_softmax(t, dim=-1), [x[[0, 2]]],
             name="log_softmax extreme")


# ---- gelu (tanh approximation) -------------------------------------------------------------

@DT
@TORCH
@given(data=st.data())
def test_gelu_torch(dtype, data):
    x = data.draw(S.arrays(data.draw(S.shapes()), dtype, bound=5.0))
    check_op(F.gelu, lambda t: TF.gelu(t, approximate="tanh"), [x], name="gelu")


@FD
@given(data=st.data())
def test_gelu_fd(data):
    fd_check(F.gelu, [data.draw(S.arrays(data.draw(S.shapes()), F64, bound=5.0))], name="gelu")


def test_gelu_is_the_tanh_form():
    # the formula is the book's GELU (section 4.3): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    x = np.array([-3.0, -1.0, 0.5, 2.0])
    want = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    assert_close(F.gelu(tg.Tensor(x)).data, want, what="gelu tanh form")


# ---- layer_norm ----------------------------------------------------------------------------

@st.composite
def layer_norm_case(draw, dtype):
    """x (..., D), D >= 2, with well-conditioned rows: each row is rescaled in place (keeping the
    drawn memory layout) to mean in [-2, 2] and std in [0.5, 2], so rstd <= 2 and rounding is
    not amplified; rows with variance << eps are test_layer_norm_degenerate_rows_torch's job."""
    # D >= 3: with 2 features each row normalises to (-1, 1) whatever x is, so dx is exactly 0
    # in theory and only rounding noise in practice, which no relative tolerance can judge
    shape = (*draw(S.shapes(max_dims=3)), draw(st.integers(3, 6)))
    x = draw(S.arrays(shape, dtype))
    if not x.flags.writeable:  # a broadcast view; along the last axis it would be constant rows
        x = x.copy()
    rows = x.astype(np.float64)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    z = rows - rows.mean(axis=-1, keepdims=True)
    z /= np.maximum(np.sqrt((z * z).mean(axis=-1, keepdims=True)), 1e-12)
    z[np.abs(z).sum(axis=-1) == 0] = np.resize([1.0, -1.0], shape[-1])  # an all-equal row
    x[...] = z * rng.uniform(0.5, 2.0, (*shape[:-1], 1)) + rng.uniform(-2.0, 2.0, (*shape[:-1], 1))
    d = shape[-1]
    return x, draw(S.arrays((d,), dtype)), draw(S.arrays((d,), dtype))


def layer_norm_dx_scale(x, w):
    """dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * w, |xhat| <= sqrt(D):
    a cancellation of terms up to ~ rstd * max|w| * D. With D == 1 (or 2) the exact dx is 0
    (tiny) while rstd = 1/sqrt(var + eps) reaches 316, so rounding is judged on that scale."""
    x64 = x.astype(np.float64).reshape(-1, x.shape[-1])
    rstd = 1.0 / np.sqrt(x64.var(axis=-1) + 1e-5) if x64.size else np.zeros(1)
    return float(rstd.max(initial=0.0)) * float(np.abs(w).max(initial=0.0)) * x.shape[-1]


def torch_layer_norm(x, w, b):
    return TF.layer_norm(x, (x.shape[-1],), w, b, eps=1e-5)


@DT
@TORCH
@given(data=st.data())
def test_layer_norm_torch(dtype, data):
    x, scale, shift = data.draw(layer_norm_case(dtype))
    check_op(lambda x, w, b: F.layer_norm(x, w, b, eps=1e-5), torch_layer_norm, [x, scale, shift],
             name="layer_norm")


@FD
@given(data=st.data())
def test_layer_norm_fd(data):
    fd_check(lambda x, w, b: F.layer_norm(x, w, b, eps=1e-5), list(data.draw(layer_norm_case(F64))),
             name="layer_norm")


@DT
@pytest.mark.parametrize("rows", ["constant", "single_feature", "tiny_spread"])
def test_layer_norm_degenerate_rows_torch(rows, dtype):
    """Rows with variance << eps (default eps is 1e-5): the output is ~`shift`, and
    rstd = 1/sqrt(var + eps) ~ 316 multiplies the rounding of the row mean. In float32 that is
    half an ulp of 1.5 (6e-8) x 316 x |w| <= 1.5 ~ 3e-5 per term, hence tol_factor 100 there;
    float64 keeps the plain tolerance. The oracle is torch in float64 (ref64): torch's float32
    backward (an a*dy + b*x + c form) loses ~40 ulp on such rows, more than tinygpt does."""
    rng = np.random.default_rng(15)
    x = {"constant": np.full((3, 4), 2.0), "single_feature": rng.standard_normal((5, 1)),
         "tiny_spread": 1.5 + 1e-3 * rng.standard_normal((3, 4))}[rows].astype(dtype)
    d = x.shape[-1]
    w, b = rng.uniform(0.5, 1.5, d).astype(dtype), rng.standard_normal(d).astype(dtype)
    check_op(F.layer_norm, torch_layer_norm, [x, w, b], name=f"layer_norm {rows}",
             tol_factor=100.0 if dtype == np.float32 else 1.0,
             grad_scale={0: layer_norm_dx_scale(x, w)}, ref64=True)


# ---- cross_entropy -------------------------------------------------------------------------

@st.composite
def cross_entropy_case(draw, dtype, ignore_index=-100, p_ignore=None):
    n, c = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    logits = draw(S.arrays((n, c), dtype, bound=4.0))
    targets = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    p = draw(st.sampled_from([0.0, 0.3])) if p_ignore is None else p_ignore
    ignore = np.random.default_rng(draw(st.integers(0, 2**16))).random(n) < p
    return logits, np.where(ignore, ignore_index, targets)


@DT
@TORCH
@given(data=st.data())
def test_cross_entropy_torch(dtype, data):
    logits, targets = data.draw(cross_entropy_case(dtype))
    if (targets == -100).all():
        targets[0] = 0  # all-ignored is its own test below
    wrap = data.draw(st.booleans())
    check_op(lambda l, t: F.cross_entropy(l, tg.Tensor(t) if wrap else t),
             lambda l, t: TF.cross_entropy(l, t), [logits, targets], name="cross_entropy")


@FD
@given(data=st.data())
def test_cross_entropy_fd(data):
    logits, targets = data.draw(cross_entropy_case(F64))
    if (targets == -100).all():
        targets[0] = 0
    fd_check(F.cross_entropy, [logits, targets], name="cross_entropy")


@DT
@settings(max_examples=20)
@given(data=st.data())
def test_cross_entropy_custom_ignore_index_torch(dtype, data):
    logits, targets = data.draw(cross_entropy_case(dtype, ignore_index=0, p_ignore=0.3))
    if (targets == 0).all():
        targets[0] = logits.shape[1] - 1 if logits.shape[1] > 1 else 0
    check_op(lambda l, t: F.cross_entropy(l, t, ignore_index=0),
             lambda l, t: TF.cross_entropy(l, t, ignore_index=0), [logits, targets],
             name="cross_entropy(ignore_index=0)")


@DT
def test_cross_entropy_all_ignored_matches_torch_nan(dtype):
    """Every target ignored: torch returns NaN (0/0) and zero gradients."""
    logits = np.random.default_rng(12).standard_normal((3, 5)).astype(dtype)
    targets = np.full(3, -100, np.int64)
    with np.errstate(all="ignore"):
        check_op(F.cross_entropy, TF.cross_entropy, [logits, targets], name="cross_entropy all ignored")


@DT
def test_cross_entropy_large_logits_stable_torch(dtype):
    logits = np.array([[1000.0, -1000.0, 0.0], [50.0, 50.0, 50.0]], dtype)
    check_op(F.cross_entropy, TF.cross_entropy, [logits, np.array([1, 2])], name="cross_entropy large")


# ---- embedding -----------------------------------------------------------------------------

@st.composite
def embedding_case(draw, dtype):
    v, d = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    ishape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    idx = draw(S.index_arrays(v, ishape, allow_negative=False))
    return idx, draw(S.arrays((v, d), dtype))


@DT
@TORCH
@given(data=st.data())
def test_embedding_torch(dtype, data):
    idx, weight = data.draw(embedding_case(dtype))
    wrap = data.draw(st.booleans())
    check_op(lambda i, w: F.embedding(tg.Tensor(i) if wrap else i, w), TF.embedding, [idx, weight],
             name="embedding")


@FD
@given(data=st.data())
def test_embedding_fd(data):
    fd_check(F.embedding, list(data.draw(embedding_case(F64))), name="embedding")


def test_embedding_repeated_ids_accumulate():
    w = tg.Tensor(np.zeros((4, 2)), requires_grad=True)
    F.embedding(np.array([[1, 1], [3, 1]]), w).sum().backward()
    np.testing.assert_array_equal(w.grad, [[0, 0], [3, 3], [0, 0], [1, 1]])


# ---- linear (the fused x @ W.T + b op behind nn.Linear) ---------------------------------------

@st.composite
def linear_case(draw, dtype):
    lead = draw(S.shapes(max_dims=2))
    n_in, n_out = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    x = draw(S.arrays((*lead, n_in), dtype))
    w = draw(S.arrays((n_out, n_in), dtype))
    return x, w, draw(S.arrays((n_out,), dtype)), draw(st.booleans())


@DT
@given(data=st.data())
def test_linear_torch(dtype, data):
    x, w, b, with_bias = data.draw(linear_case(dtype))
    if with_bias:
        check_op(F.linear, TF.linear, [x, w, b], name="linear")
    else:
        check_op(F.linear, TF.linear, [x, w], name="linear (no bias)")


@FD
@given(data=st.data())
def test_linear_fd(data):
    x, w, b, with_bias = data.draw(linear_case(F64))
    fd_check(F.linear, [x, w, b] if with_bias else [x, w], name="linear")
