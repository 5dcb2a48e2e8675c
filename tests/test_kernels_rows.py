"""Row kernels == their NumPy references, forward and backward: exp_row, softmax (plain, causal,
causal + dropout), cached attention, layer norm, GELU, cross-entropy (with ignored targets)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_checks import (DTYPES, LAYOUTS, NB, ODD, REF, SEEDS, check, fast, make, run_python,  # noqa: F401
                           warm_kernels)

import tinygpt.kernels as K
from tinygpt import ops
from tinygpt.kernels import _rows
from tinygpt.errors import InputIndexError


def test_exp_row_accuracy():
    for dt, lo, hi, max_rel in ((np.float32, -87.0, 88.0, 1.2e-7), (np.float64, -708.0, 709.0, 4e-16)):
        x = np.concatenate([np.linspace(-800.0, 800.0, 100001), np.linspace(-1.0, 1.0, 1001),
                            [np.nan, np.inf, -np.inf, 0.0, -0.0, lo, hi]]).astype(dt)
        y = np.empty_like(x)
        _rows.exp_row(x, x.size, dt(1.0), dt(0.0), y)
        with np.errstate(over="ignore"):
            want = np.exp(x.astype(np.float64))
        ok = (x >= lo) & (x <= hi)
        assert np.max(np.abs(y[ok] - want[ok]) / want[ok]) < max_rel, dt
        assert np.all(y[x < lo] == 0.0) and np.all(y[(x > hi) & (x < np.inf)] == np.inf)
        assert np.isnan(y[-7]) and y[-6] == np.inf and y[-5] == 0.0 and y[-4] == 1.0 and y[-3] == 1.0



# ---------------------------------------------------------------- softmax

@fast(80)
@given(lead=st.lists(ODD, max_size=2), n=ODD, layout=LAYOUTS, dtype=DTYPES, scale=st.sampled_from([1.0, 30.0]),
       neg_inf=st.booleans(), seed=SEEDS)
def test_softmax(lead, n, layout, dtype, scale, neg_inf, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(lead) + (n,)
    x = make(rng, shape, dtype, scale, layout)
    if neg_inf and n > 1:  # masked-out entries (never a whole row)
        x = np.where(rng.random(shape) < 0.3, -np.inf, x).astype(dtype)
        x[..., 0] = 1.0
    y = REF["softmax_forward"](x)
    assert y.dtype == dtype
    check("softmax_forward", NB["softmax_forward"](x), y)
    dy = make(rng, shape, dtype, layout=layout)
    check("softmax_backward", NB["softmax_backward"](y, dy), REF["softmax_backward"](y, dy))


@fast(100)
@given(lead=st.lists(st.sampled_from([1, 2, 3]), max_size=2), tq=ODD, extra=st.sampled_from([0, 0, 1, 4, 17]),
       layout=LAYOUTS, dtype=DTYPES, scale=st.sampled_from([0.125, 1.0, 3.0, -0.5]), seed=SEEDS)
def test_causal_softmax(lead, tq, extra, layout, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    tk = tq + extra
    shape = tuple(lead) + (tq, tk)
    s = make(rng, shape, dtype, 4.0, layout)
    masked = np.arange(tk)[None, :] > np.arange(tq)[:, None] + (tk - tq)
    y = REF["causal_softmax_forward"](s, scale)
    got = NB["causal_softmax_forward"](s, scale)
    check("causal_softmax_forward", got, y)
    assert np.all(got[..., masked] == 0.0) and np.all(y[..., masked] == 0.0)
    dy = make(rng, shape, dtype, layout=layout)
    dx = NB["causal_softmax_backward"](y, dy, scale)
    check("causal_softmax_backward", dx, REF["causal_softmax_backward"](y, dy, scale), scale=abs(scale))
    assert np.all(dx[..., masked] == 0.0)


@fast(60)
@given(lead=st.lists(st.sampled_from([1, 2, 3]), max_size=2), tq=ODD, extra=st.sampled_from([0, 1, 17]),
       layout=LAYOUTS, dtype=DTYPES, p=st.sampled_from([0.1, 0.5, 1.0]), seed=st.integers(0, 2**63 - 1))
def test_causal_softmax_dropout(lead, tq, extra, layout, dtype, p, seed):
    """The fused kernel is bit-identical to the causal softmax kernel followed by the dropout kernel,
    and agrees with the reference pair (forward and backward)."""
    rng = np.random.default_rng(seed % 2**32)
    shape = tuple(lead) + (tq, tq + extra)
    s, dz = make(rng, shape, dtype, 4.0, layout), make(rng, shape, dtype, layout=layout)
    z, y, keep = NB["causal_softmax_dropout_forward"](s, 0.5, p, seed)
    y2 = NB["causal_softmax_forward"](s, 0.5)
    z2, keep2 = NB["dropout_forward"](y2, p, seed)
    visible = ~K.softmax.causal_mask_ref(*shape[-2:])
    assert np.array_equal(y, y2) and np.array_equal(z, z2) and np.array_equal(keep, keep2 & visible)
    dx = NB["causal_softmax_dropout_backward"](y, keep, dz, 0.5, p)
    assert np.array_equal(dx, NB["causal_softmax_backward"](y, NB["dropout_backward"](dz, keep, p), 0.5))
    z_ref, y_ref, keep_ref = REF["causal_softmax_dropout_forward"](s, 0.5, p, seed)
    assert np.array_equal(keep, keep_ref)
    check("causal_softmax_dropout_forward", z, z_ref, scale=1.0 / (1.0 - p) if p < 1 else 1.0)
    check("causal_softmax_dropout_backward", dx,
          REF["causal_softmax_dropout_backward"](y_ref, keep_ref, dz, 0.5, p))


@fast(80)
@given(b=st.sampled_from([1, 2]), g=st.sampled_from([1, 3]), group=st.sampled_from([1, 1, 2, 4]), hd=ODD,
       tq=st.sampled_from([1, 1, 2, 17]), cached=st.sampled_from([0, 1, 16, 63]), spare=st.sampled_from([0, 5]),
       q_layout=LAYOUTS, dtype=DTYPES, seed=SEEDS)
def test_cached_attention(b, g, group, hd, tq, cached, spare, q_layout, dtype, seed):
    """Attention over a KV cache of G = g key/value heads for H = g * group query heads (group 1:
    GPT-2's multi-head attention; more: grouped-query attention) with `length` = cached + Tq filled
    positions of S = length + spare: the kernel equals the reference, and the reference equals the
    composed ops it replaces (each key/value head repeated for its group, as torch's
    repeat_interleave, then q @ k.T, the causal softmax, @ v) on the filled part only (the spare
    positions hold garbage)."""
    rng = np.random.default_rng(seed)
    length, h = cached + tq, g * group
    q = make(rng, (b, h, tq, hd), dtype, 2.0, q_layout)
    k, v = make(rng, (b, g, length + spare, hd), dtype), make(rng, (b, g, length + spare, hd), dtype)
    k[:, :, length:], v[:, :, length:] = np.nan, np.nan  # never read
    scale = 1.0 / np.sqrt(hd)
    want = REF["cached_attention"](q, k, v, length, scale)
    assert want.shape == (b, tq, h, hd)
    check("cached_attention", NB["cached_attention"](q, k, v, length, scale), want, scale=4.0)
    keys, values = (np.repeat(a[:, :, :length], group, axis=1) for a in (k, v))  # (b, H, L, hd)
    w = REF["causal_softmax_forward"](q @ keys.swapaxes(-1, -2), scale)
    check("cached_attention vs composed", want, (w @ values).transpose(0, 2, 1, 3))


def test_cached_attention_checks_shapes():
    q, k = np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 2, 8, 4), np.float32)
    for impl in (NB, REF):
        with pytest.raises(ValueError, match="length"):
            impl["cached_attention"](q, k, k, 2, 0.5)        # fewer positions than queries
        with pytest.raises(ValueError, match="length"):
            impl["cached_attention"](q, k, k, 9, 0.5)        # beyond the cache
        with pytest.raises(ValueError, match="do not match"):
            impl["cached_attention"](q, np.zeros((1, 3, 8, 4), np.float32), np.zeros((1, 3, 8, 4), np.float32), 3, 0.5)
        with pytest.raises(ValueError, match="do not match"):   # 2 query heads over 4 key heads
            impl["cached_attention"](q, np.zeros((1, 4, 8, 4), np.float32), np.zeros((1, 4, 8, 4), np.float32), 3, 0.5)
        with pytest.raises(TypeError, match="dtypes differ"):
            impl["cached_attention"](q, k.astype(np.float64), k, 3, 0.5)


def test_causal_softmax_needs_tk_ge_tq():
    s = np.zeros((3, 2), np.float32)
    for impl in (NB, REF):
        with pytest.raises(ValueError):
            impl["causal_softmax_forward"](s, 1.0)


# ---------------------------------------------------------------- layernorm

@fast(80)
@given(n=ODD, d=ODD, layout=LAYOUTS, dtype=DTYPES, offset=st.sampled_from([0.0, 100.0]),
       eps=st.sampled_from([1e-5, 1e-12]), seed=SEEDS)
def test_layernorm(n, d, layout, dtype, offset, eps, seed):
    rng = np.random.default_rng(seed)
    x = (make(rng, (n, d), dtype, 2.0, layout) + offset).astype(dtype)  # offset: two-pass variance
    if d == 1:
        eps = 1e-5  # zero variance: rstd = 1/sqrt(eps); keep it finite and well-conditioned
    w, b = make(rng, (d,), dtype), make(rng, (d,), dtype)
    want = REF["layernorm_forward"](x, w, b, eps)
    got = NB["layernorm_forward"](x, w, b, eps)
    # conditioning: rounding in the mean is magnified by |mean| * rstd in both implementations
    cond = max(1.0, float(np.max(np.abs(want[1]).astype(np.float64) * want[2])))
    for name, g, r in zip(("y", "mean", "rstd"), got, want):
        assert r.dtype == dtype
        check(f"layernorm_forward {name}", g / (want[2] if name == "rstd" else 1), r / (want[2] if name == "rstd" else 1),
              scale=cond)
    dy = make(rng, (n, d), dtype, layout=layout)
    _, mean, rstd = want
    for name, g, r in zip(("dx", "dscale", "dshift"), NB["layernorm_backward"](dy, x, w, mean, rstd),
                          REF["layernorm_backward"](dy, x, w, mean, rstd)):
        check(f"layernorm_backward {name}", g, r, scale=np.sqrt(n) * cond)


# ---------------------------------------------------------------- GELU and SiLU

@pytest.mark.parametrize("name", ["gelu", "silu"])
@fast(60)
@given(shape=st.lists(ODD, min_size=1, max_size=3), layout=LAYOUTS, dtype=DTYPES,
       scale=st.sampled_from([1.0, 4.0]), seed=SEEDS)
def test_activation(name, shape, layout, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, tuple(shape), dtype, scale, layout)
    dy = make(rng, tuple(shape), dtype, layout=layout)
    fwd, bwd = f"{name}_forward", f"{name}_backward"
    check(fwd, NB[fwd](x), REF[fwd](x), scale=scale)
    check(bwd, NB[bwd](x, dy), REF[bwd](x, dy), scale=scale)


@pytest.mark.parametrize("name", ["gelu", "silu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_extremes(name, dtype):
    # far below exp's range the gate is exactly 0 (y = 0), far above it exactly 1 (y = x)
    x = np.array([-1e4, -800.0, -100.0, -30.0, -10.0, -1e-3, -0.0, 0.0, 1e-30, 1e-3, 10.0, 30.0,
                  100.0, 800.0, 1e4], dtype)
    dy = np.ones_like(x)
    fwd, bwd = f"{name}_forward", f"{name}_backward"
    check(fwd, NB[fwd](x), REF[fwd](x), scale=10.0)
    check(bwd, NB[bwd](x, dy), REF[bwd](x, dy), scale=10.0)
    assert NB[fwd](x)[0] == 0.0 and NB[fwd](x)[-1] == x[-1]
    assert np.isnan(NB[fwd](np.array([np.nan], dtype))[0])


# ---------------------------------------------------------------- cross-entropy

@fast(80)
@given(n=ODD, v=ODD, layout=LAYOUTS, dtype=DTYPES, ignore_index=st.sampled_from([-100, 0, 2]),
       p_ignore=st.sampled_from([0.0, 0.3, 1.0]), grad_scale=st.sampled_from([1.0, 0.37]), seed=SEEDS)
def test_cross_entropy(n, v, layout, dtype, ignore_index, p_ignore, grad_scale, seed):
    rng = np.random.default_rng(seed)
    logits = make(rng, (n, v), dtype, 5.0, layout)
    targets = rng.integers(0, v, n)
    targets[rng.random(n) < p_ignore] = ignore_index
    loss, lse = REF["cross_entropy_forward"](logits, targets, ignore_index)
    assert loss.shape == () and loss.dtype == dtype and lse.dtype == dtype
    got_loss, got_lse = NB["cross_entropy_forward"](logits, targets, ignore_index)
    check("cross_entropy loss", got_loss, loss)
    check("cross_entropy lse", got_lse, lse)
    if np.all(targets == ignore_index):
        assert np.isnan(got_loss) and np.isnan(loss)
    want = REF["cross_entropy_backward"](logits, targets, lse, ignore_index, grad_scale)
    check("cross_entropy_backward", NB["cross_entropy_backward"](logits, targets, lse, ignore_index, grad_scale), want)
    ignored = targets == ignore_index
    assert np.all(want[ignored] == 0.0)
    # out= : a reused buffer, and in place over (a contiguous copy of) the logits
    buf = np.full((n, v), np.nan, dtype)
    for impl in (NB, REF):
        got = impl["cross_entropy_backward"](logits, targets, lse, ignore_index, grad_scale, out=buf)
        assert got is buf
        check("cross_entropy_backward out=", buf, want)
        inplace = np.ascontiguousarray(logits).copy()
        impl["cross_entropy_backward"](inplace, targets, lse, ignore_index, grad_scale, out=inplace)
        check("cross_entropy_backward in place", inplace, want)


def test_cross_entropy_bad_targets():
    """The kernels' forward checks the targets' range (the backward is handed the same targets and
    only checks their shape); the op checks it first and raises tinygpt's InputIndexError."""
    logits = np.zeros((2, 5), np.float32)
    for impl in (NB, REF):
        for bad in ([0, 5], [-1, 0]):
            with pytest.raises(IndexError, match="out of range for 5 classes"):
                impl["cross_entropy_forward"](logits, np.array(bad), -100)
    with pytest.raises(InputIndexError, match="cross_entropy target 5 is out of range for 5 classes"):
        ops.cross_entropy(logits, np.array([0, 5]))
