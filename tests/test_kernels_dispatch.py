"""Kernel selection and the matmul dispatch: the backend variable, the fallbacks (no torch, no JIT),
the GEMM and GEMV against np.matmul, and every row-split kernel forced onto many chunks."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_checks import (DTYPES, LAYOUTS, NB, ODD, REF, SEEDS, check, fast, make, run_python,  # noqa: F401
                           warm_kernels)

import tinygpt.kernels as K
from tinygpt.kernels import _jit


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


def test_a_bad_kernel_choice_is_one_line_from_the_command_and_an_input_error_from_the_package():
    # `import tinygpt` checks TINYGPT_KERNELS before loading the kernels, so the command is reached
    res = run_python("import sys; from tinygpt.cli import main; sys.exit(main(['generate', '--prompt', 'x']))",
                     TINYGPT_KERNELS="cuda")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "tinygpt: error: TINYGPT_KERNELS='cuda' is not a kernel set: use numba (the default) or numpy "
        "(the plain NumPy references), or unset it"], res.stderr
    res = run_python("import tinygpt\nfrom tinygpt.errors import InputError\n"
                     "try:\n    tinygpt.GPTModel\nexcept InputError as err:\n    print('refused:', err)",
                     TINYGPT_KERNELS="cuda")
    assert res.stdout.startswith("refused: TINYGPT_KERNELS='cuda' is not a kernel set"), res.stderr
    for value in ("", " NumPy "):   # empty is the default; case and spaces do not matter
        res = run_python("import tinygpt; print(tinygpt.kernels.BACKEND)", TINYGPT_KERNELS=value)
        assert res.stdout.split() == [value.strip().lower() or "numba"], res.stderr


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
    check("gemm_numba", K.gemm.gemm_numba(a, b), want, scale=np.sqrt(k))
    check("matmul", NB["matmul"](a, b), want, scale=np.sqrt(k))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_panels_and_tasks(dtype):
    """Sizes past one task (64 rows, 256 columns) and one K panel (256), uneven everywhere."""
    rng = np.random.default_rng(0)
    a, b = make(rng, (2, 131, 300), dtype), make(rng, (2, 300, 259), dtype, layout="T")
    check("gemm_numba", K.gemm.gemm_numba(a, b), np.matmul(a, b), scale=20.0)


@fast(60)
@given(m=st.integers(1, 9), k=ODD, n=ODD, dtype=DTYPES, seed=SEEDS, out=st.booleans())
def test_gemv(m, k, n, dtype, seed, out):
    """The decode-time product x @ W.T (a few rows, W stored (out, in)): kernel and dispatch, for
    every row count through two groups of four plus each leftover (1-3 rows), even and odd N."""
    rng = np.random.default_rng(seed)
    x, w = make(rng, (m, k), dtype), make(rng, (n, k), dtype)
    want = K.gemm.matmul_ref(x, w.T)
    check("gemv_numba", K.gemm.gemv_numba(x, w), want, scale=np.sqrt(k))
    buf = np.empty((m, n), dtype) if out else None
    got = NB["matmul"](x, w.T, out=buf)
    check("matmul gemv class", got, want, scale=np.sqrt(k))
    assert buf is None or got is buf


@pytest.mark.parametrize("k", [203, 2051])  # rows of x shorter / longer than LONG_ROW bytes
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemv_rows_split_and_float64(dtype, k, monkeypatch):
    """Up to GEMV_MAX_ROWS rows, K not a multiple of 16, both loop orders (weight rows in pairs
    with an odd one left), the weight rows split over many pool chunks; float64 within 1e-12."""
    monkeypatch.setattr(K.gemm, "GEMV_MIN_ROWS", 1)
    rng = np.random.default_rng(1)
    w = make(rng, (41, k), dtype)
    old = _jit.num_threads()
    try:
        for threads in (1, 3):
            _jit.set_num_threads(threads)
            for m in (1, 2, 3, 4, 5, 8, 11, 16):
                x = make(rng, (m, k), dtype)
                got, want = K.gemm.gemv_numba(x, w, split=threads > 1), np.matmul(x, w.T)
                check("gemv_numba", got, want, scale=np.sqrt(k))
                if dtype == np.float64:
                    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
    finally:
        _jit.set_num_threads(old)


def test_gemv_rule():
    """The docstring's rule: up to GEMV_MAX_ROWS (16) rows against a stored weight go to our GEMV
    on one thread; on more threads 2..GEMV_MAX_ROWS_SPLIT (4) rows go to it split over the pool
    and one row to BLAS's threaded gemv; every other product goes to BLAS (the blocked GEMM is a
    teaching kernel the rule never picks)."""
    assert (K.gemm.GEMV_MAX_ROWS, K.gemm.GEMV_MAX_ROWS_SPLIT) == (16, 4)
    w = np.ones((50, 8), np.float32)
    rows = lambda m: np.ones((m, 8), np.float32)  # noqa: E731
    old = _jit.num_threads()
    try:
        _jit.set_num_threads(1)
        assert all(K.gemm.uses_gemv(rows(m), w.T) for m in range(1, 17))
        assert not K.gemm.uses_gemv(rows(17), w.T)                                # too many rows
        assert not K.gemm.uses_gemv(rows(1), np.ascontiguousarray(w.T))          # not a stored weight
        assert not K.gemm.uses_gemv(rows(1).astype(np.float64), w.T)             # mixed dtypes
        assert not K.gemm.uses_gemv(np.ones((3, 1, 8), np.float32), w.T)         # batched
        _jit.set_num_threads(2)
        assert not K.gemm.uses_gemv(rows(1), w.T)                                # threaded BLAS gemv
        assert all(K.gemm.uses_gemv(rows(m), w.T) for m in (2, 3, 4))            # ours, split
        assert not K.gemm.uses_gemv(rows(5), w.T)                                # BLAS
    finally:
        _jit.set_num_threads(old)


def test_warmup_leaves_the_teaching_gemm_uncompiled():
    """kernels.warmup compiles what the engine dispatches to, not the never-selected GEMM."""
    res = run_python("import tinygpt.kernels as K; K.warmup(); print(len(K.gemm._gemm.signatures), "
                     "len(K.gemm._gemv.signatures))")
    assert res.stdout.split() == ["0", "1"], res.stderr



# ---------------------------------------------------------------- the multi-thread split

def test_chunked_paths(monkeypatch):
    """Force many chunks on small inputs: every row-split kernel still equals its reference."""
    from tinygpt.kernels import adamw, attention, cross_entropy, dropout, gelu, layernorm, silu, softmax
    for mod in (softmax, layernorm, gelu, silu, cross_entropy, adamw, dropout, attention):
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
            check("silu", NB["silu_forward"](x), REF["silu_forward"](x), scale=10.0)
            check("silu bwd", NB["silu_backward"](x, dy), REF["silu_backward"](x, dy), scale=10.0)
            t = rng.integers(0, 65, x2.shape[0])
            t[::4] = -100
            loss, lse = REF["cross_entropy_forward"](x2, t, -100)
            for g, r in zip(NB["cross_entropy_forward"](x2, t, -100), (loss, lse)):
                check("ce", g, r)
            check("ce bwd", NB["cross_entropy_backward"](x2, t, lse, -100, 1.0),
                  REF["cross_entropy_backward"](x2, t, lse, -100, 1.0))
            a, b = make(rng, (3, 70, 33), dt), make(rng, (3, 33, 300), dt)
            check("gemm", K.gemm.gemm_numba(a, b), a @ b, scale=6.0)
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

