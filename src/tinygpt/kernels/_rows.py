"""Row helpers shared by the Numba kernels (softmax, cross-entropy, GELU, layernorm).

No SVML here: ``np.exp`` inside a jitted loop is a scalar libm call. ``exp_row`` is a
vectorisable exp: Cody-Waite range reduction t = k ln2 + r, a Taylor polynomial in r (degree 7 for
float32, 12 for float64), times 2^k written into the exponent bits (``pow2``). Max relative error
7e-8 (float32) / 3.2e-16 (float64), tested in tests/test_kernels_rows.py. On rows in cache it beats
NumPy's own vectorised ``np.exp`` (bench/kernels.py, the softmax rows).

Fast-math: ``row_sum``/``row_dot`` use {'reassoc', 'contract'} only, so LLVM can vectorise the sum
(16 partial sums); the tests prove float64 agreement with the NumPy references at 1e-10 still holds.
``exp_row`` uses {'contract'} only (reassoc would undo the Cody-Waite split). ``row_max`` has no
fast-math: eight explicit running maxima vectorise by themselves, where the plain loop does not
(bench/kernels.py, the cross-entropy rows).
"""
import numpy as np

from ._jit import HAVE_NUMBA, chunks, njit, run_chunks

REDUCTION_FASTMATH = {"reassoc", "contract"}  # what the reductions need; nnan/ninf/afn stay off

LOG2E = 1.4426950408889634
LN2_HI = 0.693145751953125         # 16 significant bits: k * LN2_HI is exact
LN2_LO = 1.42860682030941723212e-6


@njit
def row_max(x, n):
    """max(x[:n]) for n >= 1 (NaNs are skipped; exp_row propagates them).

    Explicit selects, not max(): this exact pattern is what vectorises (see above), and its NaN
    behaviour is the one written here. ``t != t`` in exp_row is the NaN test.
    """
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = x[0]
    j = 0
    while j + 8 <= n:
        v = x[j]; m0 = v if v > m0 else m0
        v = x[j + 1]; m1 = v if v > m1 else m1
        v = x[j + 2]; m2 = v if v > m2 else m2
        v = x[j + 3]; m3 = v if v > m3 else m3
        v = x[j + 4]; m4 = v if v > m4 else m4
        v = x[j + 5]; m5 = v if v > m5 else m5
        v = x[j + 6]; m6 = v if v > m6 else m6
        v = x[j + 7]; m7 = v if v > m7 else m7
        j += 8
    while j < n:
        v = x[j]; m0 = v if v > m0 else m0
        j += 1
    m0 = m1 if m1 > m0 else m0
    m2 = m3 if m3 > m2 else m2
    m4 = m5 if m5 > m4 else m4
    m6 = m7 if m7 > m6 else m6
    m0 = m2 if m2 > m0 else m0
    m4 = m6 if m6 > m4 else m4
    return m4 if m4 > m0 else m0


@njit(fastmath=REDUCTION_FASTMATH)
def row_sum(x, n):
    s = x.dtype.type(0.0)
    for j in range(n):
        s += x[j]
    return s


@njit(fastmath=REDUCTION_FASTMATH)
def row_dot(a, b, n):
    s = a.dtype.type(0.0)
    for j in range(n):
        s += a[j] * b[j]
    return s


def pow2(k, like):
    """2.0 ** k for an integral float k in the normal exponent range, in the float type of `like`.

    This body runs only without JIT; jitted code gets the ``overload`` below, which writes k into
    the exponent bits (the int width is picked by dtype at compile time: Numba's scalar ``.view``
    needs the literal ``np.int32(...)`` form).
    """
    return type(like)(2.0 ** int(k))


if HAVE_NUMBA:
    from numba import types
    from numba.extending import overload

    @overload(pow2, jit_options={"error_model": "numpy"})
    def _pow2_impl(k, like):
        if like == types.float32:
            def impl(k, like):
                return np.int32(np.int32(np.int32(k) + np.int32(127)) << np.int32(23)).view(np.float32)
        else:
            def impl(k, like):
                return np.int64(np.int64(np.int64(k) + np.int64(1023)) << np.int64(52)).view(np.float64)
        return impl


@njit(fastmath={"contract"})
def exp_row(x, n, scale, shift, y):
    """y[:n] = exp(scale * x[:n] - shift), vectorised; x and y may be the same array, but then
    LLVM's runtime alias check fails and the loop runs scalar, so avoid it.

    Below exp's range (t < -87 float32, < -708 float64) the result is 0; above (> 88 / > 709) inf;
    NaN stays NaN.
    """
    T = y.dtype.type
    single = y.itemsize == 4
    lo = T(-87.0) if single else T(-708.0)
    hi = T(88.0) if single else T(709.0)
    log2e = T(LOG2E); ln2hi = T(LN2_HI); ln2lo = T(LN2_LO)
    zero = T(0.0); half = T(0.5); one = T(1.0); inf = T(np.inf)
    for j in range(n):
        t = x[j] * scale - shift
        tc = t if t > lo else lo
        tc = tc if tc < hi else hi
        k = np.floor(tc * log2e + half)
        r = (tc - k * ln2hi) - k * ln2lo   # |r| <= ln2 / 2
        if single:  # Taylor degree 7: truncation 6e-9 relative
            p = T(1.0 / 5040.0)
            p = p * r + T(1.0 / 720.0)
        else:       # degree 12: truncation 2e-16 relative
            p = T(1.0 / 479001600.0)
            p = p * r + T(1.0 / 39916800.0)
            p = p * r + T(1.0 / 3628800.0)
            p = p * r + T(1.0 / 362880.0)
            p = p * r + T(1.0 / 40320.0)
            p = p * r + T(1.0 / 5040.0)
            p = p * r + T(1.0 / 720.0)
        p = p * r + T(1.0 / 120.0)
        p = p * r + T(1.0 / 24.0)
        p = p * r + T(1.0 / 6.0)
        p = p * r + half
        p = p * r + one
        p = p * r + one
        p = p * pow2(k, t)
        p = zero if t < lo else p
        p = inf if t > hi else p
        p = t if t != t else p
        y[j] = p


def run_elementwise(kernel, x, others, min_elems, scratch_shape):
    """out = kernel over the values of x (and of `others`, same shape), split in chunks of at least
    `min_elems` values over the threads: kernel(x, *others, out, scratch, c, nchunks) on the flat
    C-contiguous arrays, scratch (nchunks, *scratch_shape) of x's dtype. GELU's and SiLU's
    forward and backward wrappers."""
    xf = np.ascontiguousarray(x).reshape(-1)
    more = [np.ascontiguousarray(o, xf.dtype).reshape(-1) for o in others]
    out = np.empty_like(xf)
    if xf.size:
        nc = chunks(xf.size, min_elems)
        run_chunks(kernel, nc, xf, *more, out, np.empty((nc, *scratch_shape), xf.dtype))
    return out.reshape(np.shape(x))
