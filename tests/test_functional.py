"""tinygpt.nn.functional: softmax, log_softmax, gelu, layer_norm, dropout, cross_entropy,
embedding, scaled_causal_softmax. These are the kernel-backed ops: run this file both with the
default kernels and with TINYGPT_KERNELS=numpy."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import strategies as S
import tinygpt as tg
import tinygpt.nn.functional as F
from helpers import TOL, assert_close, check_op, fd_check

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
                 tol=dict(rtol=2 * np.finfo(dtype).eps, atol=0.0))


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
                 tol=dict(rtol=4 * np.finfo(dtype).eps, atol=0.0))


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
