"""AdamW, embedding backward and dropout kernels == their references, and the references == PyTorch."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from helpers import tolerance
from kernel_checks import (DTYPES, LAYOUTS, NB, ODD, REF, SEEDS, check, fast, make, run_python,  # noqa: F401
                           warm_kernels)

import tinygpt.kernels as K
from tinygpt import ops


# ---------------------------------------------------------------- AdamW

@fast(25)
@given(shape=st.lists(ODD, min_size=1, max_size=2), dtype=DTYPES, wd=st.sampled_from([0.0, 0.1]),
       betas=st.sampled_from([(0.9, 0.999), (0.9, 0.95)]), grad_layout=LAYOUTS, seed=SEEDS)
def test_adamw(shape, dtype, wd, betas, grad_layout, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    state = [[make(rng, shape, dtype), np.zeros(shape, dtype), np.zeros(shape, dtype)]]
    state.append([a.copy() for a in state[0]])
    for step in range(1, 4):
        grad = make(rng, shape, dtype, layout=grad_layout)
        for impl, (p, m, v) in zip((NB, REF), state):
            impl["adamw_step"](p, grad, m, v, step, 3e-3, betas[0], betas[1], 1e-8, wd)
    for name, got, want in zip(("param", "exp_avg", "exp_avg_sq"), *state):
        assert got.dtype == dtype
        # same operation order, no fast-math: bit-identical
        assert np.array_equal(got, want), f"adamw {name} {dtype}: max diff {np.abs(got - want).max()}"


# ---------------------------------------------------------------- embedding

@fast(30)
@given(idx_shape=st.lists(st.sampled_from([1, 3, 17]), min_size=1, max_size=2), d=ODD,
       num=st.sampled_from([1, 3, 65]), layout=LAYOUTS, dtype=DTYPES, seed=SEEDS)
def test_embedding_backward(idx_shape, d, num, layout, dtype, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num, tuple(idx_shape))  # duplicates when num is small
    grad = make(rng, tuple(idx_shape) + (d,), dtype, layout=layout)
    want = REF["embedding_backward"](idx, grad, num)
    assert want.dtype == dtype
    assert np.array_equal(NB["embedding_backward"](idx, grad, num), want)  # same order: bit-identical
    out = np.ones((num, d), dtype)
    assert NB["embedding_backward"](idx, grad, num, out=out) is out
    check("embedding_backward out=", out, want + 1)
    # ids are checked once per step, by the op's forward; the backward kernels trust them
    weight = np.zeros((num, d), dtype)
    for bad in (num, -1):
        with pytest.raises(IndexError, match=f"embedding id {bad} is out of range"):
            ops.embedding(np.array([bad]), weight)


# ---------------------------------------------------------------- dropout

@fast(60)
@given(shape=st.lists(ODD, min_size=1, max_size=3), layout=LAYOUTS, dtype=DTYPES,
       p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), seed=st.integers(0, 2**63 - 1))
def test_dropout(shape, layout, dtype, p, seed):
    rng = np.random.default_rng(seed % 2**32)
    x = make(rng, tuple(shape), dtype, layout=layout)
    y, keep = NB["dropout_forward"](x, p, seed)
    y_ref, keep_ref = REF["dropout_forward"](x, p, seed)
    assert keep.dtype == np.bool_ and y.dtype == dtype and y.shape == x.shape
    assert np.array_equal(keep, keep_ref) and np.array_equal(y, y_ref)  # same hash: bit-identical
    g = make(rng, x.shape, dtype)
    assert np.array_equal(NB["dropout_backward"](g, keep, p), REF["dropout_backward"](g, keep_ref, p))


def test_dropout_mask_rate_and_independence():
    n = 1 << 20
    for p in (0.1, 0.5):
        a = REF["dropout_forward"](np.ones(n, np.float32), p, 1)[1]
        b = REF["dropout_forward"](np.ones(n, np.float32), p, 2)[1]
        sd = np.sqrt(p * (1 - p) / n)
        assert abs(1 - a.mean() - p) < 5 * sd                       # drop rate p
        assert abs((a & b).mean() - (1 - p) ** 2) < 5 * sd          # seeds give independent masks
        assert abs((a[1:] & a[:-1]).mean() - (1 - p) ** 2) < 5 * sd  # neighbours independent


def test_dropout_keeps_nan_like_torch():
    x = np.array([np.nan] * 64, np.float32)
    y, keep = NB["dropout_forward"](x, 0.5, 3)
    assert not keep.all() and np.isnan(y).all()



# ---------------------------------------------------------------- references vs PyTorch

def test_references_match_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        tol = tolerance("kernel", dt)
        def T(a, g=False):
            return torch.tensor(a, requires_grad=g)
        x = make(rng, (2, 3, 5, 9), dt, 3.0)
        dy = make(rng, x.shape, dt)
        tx = T(x, True)
        mask = torch.ones(5, 9, dtype=torch.bool).triu(1 + 4)
        ty = torch.softmax((tx * 0.3).masked_fill(mask, float("-inf")), -1)
        (ty * T(dy)).sum().backward()
        y = REF["causal_softmax_forward"](x, 0.3)
        np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
        np.testing.assert_allclose(REF["causal_softmax_backward"](y, dy, 0.3), tx.grad.numpy(), **tol)
        h = make(rng, (17, 63), dt, 2.0)
        w, b, dh = make(rng, (63,), dt), make(rng, (63,), dt), make(rng, (17, 63), dt)
        th, tw, tb = T(h, True), T(w, True), T(b, True)
        (F.layer_norm(th, (63,), tw, tb, 1e-5) * T(dh)).sum().backward()
        y, mean, rstd = REF["layernorm_forward"](h, w, b, 1e-5)
        for got, want in zip(REF["layernorm_backward"](dh, h, w, mean, rstd), (th.grad, tw.grad, tb.grad)):
            np.testing.assert_allclose(got, want.numpy(), rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
        th = T(h, True)
        tg = F.gelu(th, approximate="tanh")
        (tg * T(dh)).sum().backward()
        np.testing.assert_allclose(REF["gelu_forward"](h), tg.detach().numpy(), **tol)
        np.testing.assert_allclose(REF["gelu_backward"](h, dh), th.grad.numpy(), rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
        logits = make(rng, (9, 11), dt, 3.0)
        targets = rng.integers(0, 11, 9)
        targets[[1, 4]] = -100
        tl = T(logits, True)
        loss_t = F.cross_entropy(tl, torch.tensor(targets), ignore_index=-100)
        (loss_t * 2.5).backward()
        loss, lse = REF["cross_entropy_forward"](logits, targets, -100)
        np.testing.assert_allclose(loss, loss_t.item(), **tol)
        np.testing.assert_allclose(REF["cross_entropy_backward"](logits, targets, lse, -100, 2.5), tl.grad.numpy(), **tol)
        p = make(rng, (50,), dt)
        tp = torch.nn.Parameter(T(p.copy()))
        opt = torch.optim.AdamW([tp], lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
        m, v = np.zeros_like(p), np.zeros_like(p)
        for step in range(1, 6):
            g = make(rng, (50,), dt)
            tp.grad = T(g)
            opt.step()
            REF["adamw_step"](p, g, m, v, step, 1e-3, 0.9, 0.95, 1e-8, 0.1)
        np.testing.assert_allclose(p, tp.detach().numpy(), **tol)
        idx = rng.integers(0, 7, (3, 4))
        g = make(rng, (3, 4, 5), dt)
        tw = torch.zeros(7, 5, dtype=tp.dtype, requires_grad=True)
        (F.embedding(torch.tensor(idx), tw) * T(g)).sum().backward()
        np.testing.assert_allclose(REF["embedding_backward"](idx, g, 7), tw.grad.numpy(), **tol)
    # every row ignored: NaN loss like torch, zero gradient
    logits = np.zeros((3, 4), np.float32)
    targets = np.full(3, -100)
    assert np.isnan(F.cross_entropy(torch.tensor(logits), torch.tensor(targets)).item())
    for impl in (NB, REF):
        loss, lse = impl["cross_entropy_forward"](logits, targets, -100)
        assert np.isnan(loss)
        assert not impl["cross_entropy_backward"](logits, targets, lse, -100, 1.0).any()
