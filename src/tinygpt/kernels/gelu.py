"""GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

Numba path uses the identity 0.5 (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + exp(-2u)), with the
vectorised ``exp_row`` over blocks of 512 values that stay in L1:
    y  = x * s,  s = 1 / (1 + exp(-2u)),  u = c (x + a x^3)
    dx = dy * (s + x * 2 s (1 - s) * c (1 + 3 a x^2))
The reference uses the same identity (the textbook 1 + tanh(u) cancels for x << 0: float64 kept only
~6 digits of gelu(-5) and failed a finite-difference check). bench/kernels.py times both paths
against torch's gelu(approximate="tanh") ("gelu" rows).
"""
import math

import numpy as np

from ._jit import chunk_bounds, njit
from ._rows import exp_row, run_elementwise

GELU_C = math.sqrt(2.0 / math.pi)  # Python floats: never upcast float32
GELU_A = 0.044715
BLOCK = 512


# ---------------------------------------------------------------- NumPy references

def gelu_forward_ref(x):
    # 0.5 x (1 + tanh(u)) written as x * sigmoid(2u): for x << 0, 1 + tanh(u) cancels (float64 keeps
    # only ~6 digits of gelu(-5)); 1 / (1 + exp(-2u)) does not.
    u = GELU_C * (x + GELU_A * (x * x * x))  # x*x*x, not x**3: powf is far slower (bench/kernels.py, gelu)
    with np.errstate(over="ignore"):          # exp(-2u) = inf for u << 0: s = 0, exactly right
        s = 1.0 / (1.0 + np.exp(-2.0 * u))
    return x * s


def gelu_backward_ref(x, dy):
    # d/dx [x s(2u)] = s + x * 2 s (1 - s) * du/dx,  du/dx = c (1 + 3 a x^2)
    # (= 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx with t = tanh(u), the textbook form)
    u = GELU_C * (x + GELU_A * (x * x * x))
    with np.errstate(over="ignore"):
        s = 1.0 / (1.0 + np.exp(-2.0 * u))
    return dy * (s + x * (2.0 * GELU_C * s * (1.0 - s)) * (1.0 + 3.0 * GELU_A * (x * x)))


# ---------------------------------------------------------------- Numba kernels

@njit(fastmath={"contract"})
def _sigmoid_2u(x, u, e):
    # e = 1 / (1 + exp(-2 u(x))) for a block x; u, e scratch of the same length
    # (exp_row must not work in place: LLVM's runtime alias check then falls back to scalar code)
    T = x.dtype.type
    m2c = T(-2.0 * GELU_C)
    a = T(GELU_A)
    one = T(1.0)
    n = x.shape[0]
    for j in range(n):
        v = x[j]
        u[j] = m2c * (v + a * (v * v * v))
    exp_row(u, n, one, T(0.0), e)
    for j in range(n):
        e[j] = one / (one + e[j])


@njit(fastmath={"contract"})
def _gelu_fwd(x, y, scratch, c, nchunks):
    # x, y flat (N,); scratch (nchunks, 2, BLOCK); blocks stay in L1
    lo, hi = chunk_bounds(c, nchunks, x.shape[0])
    u = scratch[c, 0]; s = scratch[c, 1]
    for b0 in range(lo, hi, BLOCK):
        n = min(BLOCK, hi - b0)
        xb = x[b0:b0 + n]; yb = y[b0:b0 + n]   # views: loops from 0 vectorise
        _sigmoid_2u(xb, u[:n], s[:n])
        for j in range(n):
            yb[j] = xb[j] * s[j]


@njit(fastmath={"contract"})
def _gelu_bwd(x, dy, dx, scratch, c, nchunks):
    T = x.dtype.type
    one = T(1.0)
    k2 = T(2.0 * GELU_C)
    k3 = T(3.0 * GELU_A)
    lo, hi = chunk_bounds(c, nchunks, x.shape[0])
    u = scratch[c, 0]; s = scratch[c, 1]
    for b0 in range(lo, hi, BLOCK):
        n = min(BLOCK, hi - b0)
        xb = x[b0:b0 + n]; dyb = dy[b0:b0 + n]; dxb = dx[b0:b0 + n]
        _sigmoid_2u(xb, u[:n], s[:n])
        for j in range(n):
            v = xb[j]
            sj = s[j]
            dxb[j] = dyb[j] * (sj + v * (k2 * sj * (one - sj)) * (one + k3 * (v * v)))


# ---------------------------------------------------------------- wrappers

MIN_ELEMS = 1 << 18  # values per chunk: enough work to pay for a thread hand-off (bench/kernels.py)


def gelu_forward_numba(x):
    return run_elementwise(_gelu_fwd, x, (), MIN_ELEMS, (2, BLOCK))


def gelu_backward_numba(x, dy):
    return run_elementwise(_gelu_bwd, x, (dy,), MIN_ELEMS, (2, BLOCK))
