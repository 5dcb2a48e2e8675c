"""PyTorch's CPU random stream: a Mersenne Twister (mt19937), torch's uniform and normal transforms.

`torch.manual_seed(s)` seeds mt19937 with init_genrand(s & 0xffffffff), as NumPy's legacy
`RandomState` does, and draws every value of `uniform_`, `rand`, `normal_` and `randn` from its
32-bit outputs (ATen's CPUGeneratorImpl.cpp, DistributionsHelper.h, TransformationHelper.h and
native/cpu/DistributionTemplates.h). Reproducing them here lets `tinygpt.manual_seed(123)` give
the book's initial weights, so its printed numbers come out the same.

The state is `key`, the 624 uint32 words, and `pos`, how many of them are used (624 after seeding:
the first draw twists). Every fill takes (key, pos, out) with `out` a 1-D contiguous array, writes
`out` and `key` in place and returns the new `pos`.

- uniform, float32: x = (v & (2**24 - 1)) * 2**-24 from one 32-bit draw v, then x * (hi - lo) + lo,
  every step in float32 (lo, hi rounded to float32 first); a value that rounds up to hi becomes lo.
- uniform, float64: 53 bits of ((v1 << 32) | v2) from two draws, the same steps in double.
  The multiply and the add round separately, as torch's DEFAULT-capability build does; its AVX2
  and AVX512 builds fuse them into one FMA, which changes the last bit of about half the values.
- normal (n >= 16, contiguous): n uniforms in [0, 1) into `out`, then Box-Muller on each block of
  16 (out[j] and out[j + 8] from u1 = 1 - out[j], u2 = out[j + 8]); when n % 16 != 0 the last 16
  values are drawn again from 16 new uniforms. float32 does the logs and cosines in float32 (libm's
  logf, cosf, sinf), as torch's scalar path does. torch built for AVX2 (and AVX512, which takes the
  same code) runs a vectorised polynomial log/sincos there instead, whose last bits differ; its
  DEFAULT capability (ATEN_CPU_CAPABILITY=default, and ARM builds such as the book author's Mac)
  takes the scalar path reproduced here. Standard normal only (mean 0, std 1); torch's
  `fma(x, std, mean)` is then x + 0.0, which turns the -0.0 of a uniform draw of 0 into +0.0.
- normal (n < 16): torch's scalar `normal_distribution<double>` (see core/random.py).

The NumPy references use NumPy's own MT19937 for the 32-bit stream (bit for bit) and NumPy's log,
cos and sin, which may differ from libm's in the last bit: uniforms agree exactly, normals to
rounding.
"""
import math

import numpy as np

from ._jit import njit

N = 624
_M = 397
_MASK32 = 0xFFFFFFFF


def seed_key(seed: int) -> np.ndarray:
    """init_genrand(seed & 0xffffffff): the 624 words of a freshly seeded mt19937 (pos = 624)."""
    key = np.empty(N, np.uint32)
    x = seed & _MASK32
    key[0] = x
    for j in range(1, N):
        x = (1812433253 * (x ^ (x >> 30)) + j) & _MASK32
        key[j] = x
    return key


# --- NumPy references ----------------------------------------------------------------------

def raw_ref(key: np.ndarray, pos: int, n: int):
    """The next `n` 32-bit outputs (as uint64) from NumPy's MT19937 set to (key, pos); `key` is
    updated in place. Returns (values, new pos)."""
    bg = np.random.MT19937()
    bg.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": int(pos)}}
    values = bg.random_raw(n).astype(np.uint64)
    state = bg.state["state"]
    key[:] = state["key"]
    return values, int(state["pos"])


def _uniform_ref(key, pos, n, dtype, lo, hi):
    t = np.dtype(dtype).type
    lo, hi = t(lo), t(hi)
    if t is np.float32:
        v, pos = raw_ref(key, pos, n)
        x = (v & np.uint64((1 << 24) - 1)).astype(np.float32) * np.float32(2.0 ** -24)
    else:
        v, pos = raw_ref(key, pos, 2 * n)
        bits = ((v[0::2] << np.uint64(32)) | v[1::2]) & np.uint64((1 << 53) - 1)
        x = bits.astype(np.float64) * 2.0 ** -53
    value = x * (hi - lo) + lo                       # (n,) in dtype: two roundings, no FMA
    return np.where(value == hi, lo, value), pos


def uniform_fill_ref(key, pos, out, lo, hi, chunk: int = 1 << 20):
    """out[:] = torch's uniform_(lo, hi) draws in out's dtype (float32 or float64)."""
    for start in range(0, out.size, chunk):
        stop = min(start + chunk, out.size)
        out[start:stop], pos = _uniform_ref(key, pos, stop - start, out.dtype, lo, hi)
    return pos


def _box_muller16_ref(blocks):
    """blocks (k, 16) of uniforms -> standard normals in place, torch's normal_fill_16."""
    t = blocks.dtype.type
    u1 = t(1.0) - blocks[:, :8]                      # (k, 8), [0, 1) -> (0, 1] for log
    u2 = blocks[:, 8:]                               # (k, 8)
    radius = np.sqrt(t(-2.0) * np.log(u1))           # (k, 8)
    theta = (2.0 * math.pi * u2.astype(np.float64)).astype(blocks.dtype)
    blocks[:, :8] = radius * np.cos(theta) + t(0.0)  # torch adds the mean: a -0.0 radius gives +0.0
    blocks[:, 8:] = radius * np.sin(theta) + t(0.0)


def normal_fill_ref(key, pos, out):
    """out[:] = torch's normal_(0, 1) for a contiguous float tensor of >= 16 values."""
    n = out.size
    pos = uniform_fill_ref(key, pos, out, 0.0, 1.0)
    _box_muller16_ref(out[:n - n % 16].reshape(-1, 16))
    if n % 16:
        tail = np.empty(16, out.dtype)
        pos = uniform_fill_ref(key, pos, tail, 0.0, 1.0)
        _box_muller16_ref(tail.reshape(1, 16))
        out[n - 16:] = tail
    return pos


# --- Numba kernels -------------------------------------------------------------------------

@njit
def _twist_one(key, i, j, k):
    y = (np.int64(key[i]) & 0x80000000) | (np.int64(key[j]) & 0x7FFFFFFF)
    v = np.int64(key[k]) ^ (y >> 1)
    if y & 1:
        v ^= 0x9908B0DF
    key[i] = np.uint32(v)


@njit
def _twist(key):
    """Regenerate the 624 words in place (genrand's loop, split so no index needs a modulo)."""
    for i in range(N - _M):
        _twist_one(key, i, i + 1, i + _M)
    for i in range(N - _M, N - 1):
        _twist_one(key, i, i + 1, i + _M - N)
    _twist_one(key, N - 1, 0, _M - 1)


@njit
def _temper(y):
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    y ^= y >> 18
    return y


@njit
def uniform32_fill_numba(key, pos, out, lo, hi):
    """out (float32) = torch's float32 uniform_(lo, hi); lo, hi already float32 values."""
    lo, hi = np.float32(lo), np.float32(hi)
    width = hi - lo
    scale = np.float32(1.0 / 16777216.0)
    for i in range(out.size):
        if pos >= N:
            _twist(key)
            pos = 0
        v = _temper(np.int64(key[pos]))
        pos += 1
        x = np.float32(v & 0xFFFFFF) * scale
        value = x * width + lo
        out[i] = lo if value == hi else value
    return pos


@njit
def uniform64_fill_numba(key, pos, out, lo, hi):
    """out (float64) = torch's float64 uniform_(lo, hi): 53 bits of two draws."""
    width = hi - lo
    for i in range(out.size):
        if pos >= N:
            _twist(key)
            pos = 0
        hi_word = _temper(np.int64(key[pos]))
        pos += 1
        if pos >= N:
            _twist(key)
            pos = 0
        lo_word = _temper(np.int64(key[pos]))
        pos += 1
        bits = ((hi_word & 0x1FFFFF) << 32) | lo_word   # the low 53 bits of (hi << 32) | lo
        value = np.float64(bits) * (1.0 / 9007199254740992.0) * width + lo
        out[i] = lo if value == hi else value
    return pos


@njit
def _box_muller16_f32(d, s):
    for j in range(8):
        u1 = np.float32(1.0) - d[s + j]
        u2 = d[s + j + 8]
        radius = np.float32(math.sqrt(np.float32(-2.0) * np.float32(math.log(u1))))
        theta = np.float32(2.0 * math.pi * np.float64(u2))
        d[s + j] = radius * np.float32(math.cos(theta)) + np.float32(0.0)   # + mean: -0 -> +0
        d[s + j + 8] = radius * np.float32(math.sin(theta)) + np.float32(0.0)


@njit
def _box_muller16_f64(d, s):
    for j in range(8):
        u1 = 1.0 - d[s + j]
        u2 = d[s + j + 8]
        radius = math.sqrt(-2.0 * math.log(u1))
        theta = 2.0 * math.pi * u2
        d[s + j] = radius * math.cos(theta) + 0.0                      # + mean: -0 -> +0
        d[s + j + 8] = radius * math.sin(theta) + 0.0


@njit
def normal32_fill_numba(key, pos, out):
    """out (float32, >= 16 values) = torch's scalar-path normal_(0, 1)."""
    n = out.size
    pos = uniform32_fill_numba(key, pos, out, np.float32(0.0), np.float32(1.0))
    for s in range(0, n - 15, 16):
        _box_muller16_f32(out, s)
    if n % 16:
        tail = np.empty(16, np.float32)
        pos = uniform32_fill_numba(key, pos, tail, np.float32(0.0), np.float32(1.0))
        _box_muller16_f32(tail, 0)
        out[n - 16:] = tail
    return pos


@njit
def normal64_fill_numba(key, pos, out):
    """out (float64, >= 16 values) = torch's normal_(0, 1)."""
    n = out.size
    pos = uniform64_fill_numba(key, pos, out, 0.0, 1.0)
    for s in range(0, n - 15, 16):
        _box_muller16_f64(out, s)
    if n % 16:
        tail = np.empty(16, np.float64)
        pos = uniform64_fill_numba(key, pos, tail, 0.0, 1.0)
        _box_muller16_f64(tail, 0)
        out[n - 16:] = tail
    return pos


def uniform_fill_numba(key, pos, out, lo, hi):
    """The Numba fill for out's dtype, with the reference's signature."""
    if out.dtype == np.float32:
        return uniform32_fill_numba(key, pos, out, np.float32(lo), np.float32(hi))
    return uniform64_fill_numba(key, pos, out, float(lo), float(hi))


def normal_fill_numba(key, pos, out):
    if out.dtype == np.float32:
        return normal32_fill_numba(key, pos, out)
    return normal64_fill_numba(key, pos, out)
