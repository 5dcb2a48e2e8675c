"""Every Numba kernel == its NumPy reference (forward and backward), plus a few torch oracle checks.

Both implementations are always importable (``kernels.NUMBA`` / ``kernels.REFERENCE``), so this file
runs the same comparisons whatever ``TINYGPT_KERNELS`` says; ``test_backend_selection`` checks that
the exported names follow it. Shapes use the odd sizes 1, 3, 17, 63, 65; inputs come C-contiguous,
transposed or strided; float32 and float64; masks and ignored targets.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinygpt.kernels as K
from tinygpt.kernels import _jit, _rows

NB, REF = K.NUMBA, K.REFERENCE
ODD = st.sampled_from([1, 3, 17, 63, 65])
DTYPES = st.sampled_from([np.float32, np.float64])
LAYOUTS = st.sampled_from(["c", "T", "step"])
SEEDS = st.integers(0, 2**31 - 1)
# float64 agreement is the point (fast-math reductions and the polynomial exp must not break it)
TOL = {np.dtype(np.float32): {"rtol": 2e-5, "atol": 2e-6}, np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12}}


def fast(n):
    return settings(deadline=None, max_examples=n, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="session", autouse=True)
def warm_kernels():
    """Compile (or load from the disk cache) every kernel once, so no example pays for it."""
    K.warmup(np.float32)
    K.warmup(np.float64)


def make(rng, shape, dtype, scale=1.0, layout="c"):
    """Random array with the given values and shape, laid out C-contiguous, transposed or strided."""
    a = (rng.standard_normal(shape) * scale).astype(dtype)
    if layout == "T" and a.ndim >= 2:
        return np.ascontiguousarray(a.swapaxes(-1, -2)).swapaxes(-1, -2)
    if layout == "step" and a.ndim >= 1:
        buf = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
        buf[..., ::2] = a
        return buf[..., ::2]
    return a


def check(name, got, want, scale=1.0):
    """Compare shape, then dtype, then values; print where it goes wrong."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
    tol = dict(TOL[want.dtype])
    tol["atol"] *= scale
    bad = ~np.isclose(got, want, equal_nan=True, **tol)
    if bad.any():
        diff = np.abs(got.astype(np.float64) - want)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(f"{name} {got.dtype} {got.shape}: max abs diff {np.nanmax(diff):.3g}, "
                             f"max rel {np.nanmax(diff / np.maximum(np.abs(want), 1e-300)):.3g}, "
                             f"{int(bad.sum())} bad, first at {first}: {got[first]!r} vs {want[first]!r}")


# ---------------------------------------------------------------- selection, fallbacks

def run_python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "TINYGPT_KERNELS"}
    full_env.update(env)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", code], env=full_env, cwd=root, capture_output=True, text=True,
                          check=False)


def test_backend_selection():
    assert K.BACKEND in ("numba", "numpy")
    chosen = NB if K.BACKEND == "numba" else REF
    for name, fn in chosen.items():
        assert getattr(K, name) is fn, name
    res = run_python("import tinygpt.kernels", TINYGPT_KERNELS="cuda")
    assert res.returncode != 0 and "ValueError" in res.stderr
    assert "numba" in res.stderr and "numpy" in res.stderr
    res = run_python("import tinygpt.kernels as K; print(K.BACKEND, K.softmax_forward is K.REFERENCE['softmax_forward'])",
                     TINYGPT_KERNELS="numpy")
    assert res.stdout.split() == ["numpy", "True"], res.stderr


def test_kernels_never_import_torch():
    res = run_python("import sys, tinygpt.kernels as K; K.warmup(); print('torch' in sys.modules)")
    assert res.stdout.strip() == "False", res.stderr


def test_disable_jit_path():
    """NUMBA_DISABLE_JIT=1 runs the same kernels as plain Python (tiny inputs)."""
    code = (
        "import numpy as np, tinygpt.kernels as K\n"
        "x = np.linspace(-3, 3, 2 * 3 * 4).reshape(2, 3, 4)\n"
        "for f in ('softmax_forward', 'gelu_forward'):\n"
        "    np.testing.assert_allclose(K.NUMBA[f](x), K.REFERENCE[f](x), rtol=1e-12)\n"
        "np.testing.assert_allclose(K.NUMBA['causal_softmax_forward'](x, 0.5),\n"
        "                           K.REFERENCE['causal_softmax_forward'](x, 0.5), rtol=1e-12, atol=1e-15)\n"
        "print('ok')\n")
    res = run_python(code, NUMBA_DISABLE_JIT="1")
    assert res.stdout.strip() == "ok", res.stderr


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


# ---------------------------------------------------------------- matmul

@fast(80)
@given(m=ODD, k=ODD, n=ODD, batch=st.sampled_from([(), (1,), (3,), (2, 3)]),
       bcast=st.sampled_from(["none", "a", "b"]), la=LAYOUTS, lb=LAYOUTS, dtype=DTYPES, seed=SEEDS)
def test_matmul(m, k, n, batch, bcast, la, lb, dtype, seed):
    rng = np.random.default_rng(seed)
    ba = batch[:-1] + (1,) if bcast == "a" and batch else batch
    bb = batch[:-1] + (1,) if bcast == "b" and batch else batch
    a = make(rng, ba + (m, k), dtype, layout=la)
    b = make(rng, bb + (k, n), dtype, layout=lb)
    want = np.matmul(a, b)
    check("gemm_numba", K._mm.gemm_numba(a, b), want, scale=np.sqrt(k))
    check("matmul", NB["matmul"](a, b), want, scale=np.sqrt(k))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_panels_and_tasks(dtype):
    """Sizes past one task (64 rows, 256 columns) and one K panel (256), uneven everywhere."""
    rng = np.random.default_rng(0)
    a, b = make(rng, (2, 131, 300), dtype), make(rng, (2, 300, 259), dtype, layout="T")
    check("gemm_numba", K._mm.gemm_numba(a, b), np.matmul(a, b), scale=20.0)


@fast(60)
@given(m=st.sampled_from([1, 2, 4]), k=ODD, n=ODD, dtype=DTYPES, seed=SEEDS, out=st.booleans())
def test_gemv(m, k, n, dtype, seed, out):
    """The decode-time product x @ W.T (few rows, W stored (out, in)): kernel and dispatch."""
    rng = np.random.default_rng(seed)
    x, w = make(rng, (m, k), dtype), make(rng, (n, k), dtype)
    want = x @ w.T
    check("gemv_numba", K._mm.gemv_numba(x, w), want, scale=np.sqrt(k))
    buf = np.empty((m, n), dtype) if out else None
    got = NB["matmul"](x, w.T, out=buf)
    check("matmul gemv class", got, want, scale=np.sqrt(k))
    assert buf is None or got is buf


def test_gemv_rule():
    """Few rows against a stored weight are the "gemv" class: ours on one thread, BLAS on more."""
    x, w = np.ones((1, 8), np.float32), np.ones((50, 8), np.float32)
    old = _jit.num_threads()
    try:
        _jit.set_num_threads(1)
        assert K._mm.shape_class(x, w.T) == "gemv"
        assert K._mm.use_numba_gemm(x, w.T)
        assert K._mm.shape_class(np.ones((5, 8), np.float32), w.T) == "2d"  # too many rows
        assert K._mm.shape_class(x, np.ascontiguousarray(w.T)) == "2d"   # not a stored weight
        _jit.set_num_threads(2)
        assert K._mm.shape_class(x, w.T) == "gemv"
        assert not K._mm.use_numba_gemm(x, w.T)                          # threaded BLAS
    finally:
        _jit.set_num_threads(old)


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
    visible = ~K._sm.causal_mask_ref(*shape[-2:])
    assert np.array_equal(y, y2) and np.array_equal(z, z2) and np.array_equal(keep, keep2 & visible)
    dx = NB["causal_softmax_dropout_backward"](y, keep, dz, 0.5, p)
    assert np.array_equal(dx, NB["causal_softmax_backward"](y, NB["dropout_backward"](dz, keep, p), 0.5))
    z_ref, y_ref, keep_ref = REF["causal_softmax_dropout_forward"](s, 0.5, p, seed)
    assert np.array_equal(keep, keep_ref)
    check("causal_softmax_dropout_forward", z, z_ref, scale=1.0 / (1.0 - p) if p < 1 else 1.0)
    check("causal_softmax_dropout_backward", dx,
          REF["causal_softmax_dropout_backward"](y_ref, keep_ref, dz, 0.5, p))


@fast(80)
@given(b=st.sampled_from([1, 2]), h=st.sampled_from([1, 3]), hd=ODD, tq=st.sampled_from([1, 1, 2, 17]),
       cached=st.sampled_from([0, 1, 16, 63]), spare=st.sampled_from([0, 5]), q_layout=LAYOUTS,
       dtype=DTYPES, seed=SEEDS)
def test_cached_attention(b, h, hd, tq, cached, spare, q_layout, dtype, seed):
    """Attention over a KV cache with `length` = cached + Tq filled positions of S = length + spare:
    the kernel equals the reference, and the reference equals the composed ops it replaces
    (q @ k.T, the causal softmax, @ v) on the filled part only (the spare positions hold garbage)."""
    rng = np.random.default_rng(seed)
    length = cached + tq
    q = make(rng, (b, h, tq, hd), dtype, 2.0, q_layout)
    k, v = make(rng, (b, h, length + spare, hd), dtype), make(rng, (b, h, length + spare, hd), dtype)
    k[:, :, length:], v[:, :, length:] = np.nan, np.nan  # never read
    scale = 1.0 / np.sqrt(hd)
    want = REF["cached_attention"](q, k, v, length, scale)
    assert want.shape == (b, tq, h, hd)
    check("cached_attention", NB["cached_attention"](q, k, v, length, scale), want, scale=4.0)
    w = REF["causal_softmax_forward"](q @ k[:, :, :length].swapaxes(-1, -2), scale)
    check("cached_attention vs composed", want, (w @ v[:, :, :length]).transpose(0, 2, 1, 3))


def test_cached_attention_checks_shapes():
    q, k = np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 2, 8, 4), np.float32)
    for impl in (NB, REF):
        with pytest.raises(ValueError, match="length"):
            impl["cached_attention"](q, k, k, 2, 0.5)        # fewer positions than queries
        with pytest.raises(ValueError, match="length"):
            impl["cached_attention"](q, k, k, 9, 0.5)        # beyond the cache
        with pytest.raises(ValueError, match="do not match"):
            impl["cached_attention"](q, k[:, :1], k[:, :1], 3, 0.5)
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


# ---------------------------------------------------------------- GELU

@fast(60)
@given(shape=st.lists(ODD, min_size=1, max_size=3), layout=LAYOUTS, dtype=DTYPES,
       scale=st.sampled_from([1.0, 4.0]), seed=SEEDS)
def test_gelu(shape, layout, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, tuple(shape), dtype, scale, layout)
    dy = make(rng, tuple(shape), dtype, layout=layout)
    check("gelu_forward", NB["gelu_forward"](x), REF["gelu_forward"](x), scale=scale)
    check("gelu_backward", NB["gelu_backward"](x, dy), REF["gelu_backward"](x, dy), scale=scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_extremes(dtype):
    x = np.array([-1e4, -100.0, -30.0, -10.0, -1e-3, -0.0, 0.0, 1e-30, 1e-3, 10.0, 30.0, 100.0, 1e4], dtype)
    dy = np.ones_like(x)
    check("gelu_forward", NB["gelu_forward"](x), REF["gelu_forward"](x), scale=10.0)
    check("gelu_backward", NB["gelu_backward"](x, dy), REF["gelu_backward"](x, dy), scale=10.0)
    assert np.isnan(NB["gelu_forward"](np.array([np.nan], dtype))[0])


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
    logits = np.zeros((2, 5), np.float32)
    for impl in (NB, REF):
        for bad in ([0, 5], [-1, 0]):
            with pytest.raises(IndexError):
                impl["cross_entropy_forward"](logits, np.array(bad), -100)


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
    with pytest.raises(IndexError):
        NB["embedding_backward"](np.array([num]), np.zeros((1, d), dtype), num)


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


# ---------------------------------------------------------------- the multi-thread split

def test_chunked_paths(monkeypatch):
    """Force many chunks on small inputs: every row-split kernel still equals its reference."""
    from tinygpt.kernels import adamw, attention, cross_entropy, dropout, gelu, layernorm, softmax
    for mod in (softmax, layernorm, gelu, cross_entropy, adamw, dropout, attention):
        monkeypatch.setattr(mod, "MIN_ELEMS", 1)
    old = _jit.num_threads()
    _jit.set_num_threads(3)
    try:
        rng = np.random.default_rng(0)
        for dt in (np.float32, np.float64):
            x = make(rng, (2, 5, 17, 65), dt, 3.0)
            dy = make(rng, x.shape, dt)
            check("softmax", NB["softmax_forward"](x), REF["softmax_forward"](x))
            y = REF["softmax_forward"](x)
            check("softmax bwd", NB["softmax_backward"](y, dy), REF["softmax_backward"](y, dy))
            yc = REF["causal_softmax_forward"](x, 0.5)
            check("causal", NB["causal_softmax_forward"](x, 0.5), yc)
            check("causal bwd", NB["causal_softmax_backward"](yc, dy, 0.5), REF["causal_softmax_backward"](yc, dy, 0.5))
            z, y, keep = NB["causal_softmax_dropout_forward"](x, 0.5, 0.3, 5)
            z_ref, y_ref, keep_ref = REF["causal_softmax_dropout_forward"](x, 0.5, 0.3, 5)
            assert np.array_equal(keep, keep_ref)
            check("causal dropout", z, z_ref, scale=2.0)
            check("causal dropout bwd", NB["causal_softmax_dropout_backward"](y, keep, dy, 0.5, 0.3),
                  REF["causal_softmax_dropout_backward"](y_ref, keep, dy, 0.5, 0.3), scale=2.0)
            q, kv = x[:, :, :4, :9], make(rng, (2, 5, 40, 9), dt)
            check("cached attention", NB["cached_attention"](q, kv, kv, 33, 0.3),
                  REF["cached_attention"](q, kv, kv, 33, 0.3), scale=4.0)
            x2, dy2 = x.reshape(-1, 65), dy.reshape(-1, 65)
            w = make(rng, (65,), dt)
            fwd = REF["layernorm_forward"](x2, w, w, 1e-5)
            for g, r in zip(NB["layernorm_forward"](x2, w, w, 1e-5), fwd):
                check("layernorm", g, r)
            for g, r in zip(NB["layernorm_backward"](dy2, x2, w, *fwd[1:]), REF["layernorm_backward"](dy2, x2, w, *fwd[1:])):
                check("layernorm bwd", g, r, scale=10.0)
            check("gelu", NB["gelu_forward"](x), REF["gelu_forward"](x), scale=10.0)
            check("gelu bwd", NB["gelu_backward"](x, dy), REF["gelu_backward"](x, dy), scale=10.0)
            t = rng.integers(0, 65, x2.shape[0])
            t[::4] = -100
            loss, lse = REF["cross_entropy_forward"](x2, t, -100)
            for g, r in zip(NB["cross_entropy_forward"](x2, t, -100), (loss, lse)):
                check("ce", g, r)
            check("ce bwd", NB["cross_entropy_backward"](x2, t, lse, -100, 1.0),
                  REF["cross_entropy_backward"](x2, t, lse, -100, 1.0))
            a, b = make(rng, (3, 70, 33), dt), make(rng, (3, 33, 300), dt)
            check("gemm", K._mm.gemm_numba(a, b), a @ b, scale=6.0)
            p1, p2 = x2.copy(), x2.copy()
            m1, v1, m2, v2 = (np.zeros_like(x2) for _ in range(4))
            NB["adamw_step"](p1, dy2, m1, v1, 1, 1e-3, 0.9, 0.999, 1e-8, 0.1)
            REF["adamw_step"](p2, dy2, m2, v2, 1, 1e-3, 0.9, 0.999, 1e-8, 0.1)
            assert np.array_equal(p1, p2)
            (y, keep), (y_ref, keep_ref) = NB["dropout_forward"](x, 0.3, 11), REF["dropout_forward"](x, 0.3, 11)
            assert np.array_equal(keep, keep_ref) and np.array_equal(y, y_ref)
            assert np.array_equal(NB["dropout_backward"](dy, keep, 0.3), REF["dropout_backward"](dy, keep, 0.3))
    finally:
        _jit.set_num_threads(old)


# ---------------------------------------------------------------- references vs PyTorch

def test_references_match_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        tol = TOL[np.dtype(dt)]
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
