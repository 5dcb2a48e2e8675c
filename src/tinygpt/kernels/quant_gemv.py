"""Products with weights stored in fewer bytes: bf16 (raw uint16 bits) and Q8_0 (int8 blocks of 32
with one float32 scale each), each as a NumPy reference beside a Numba kernel. Inference only
(tinygpt.quant uses them); activations and results are float32.

Decoding reads every weight once per token, so its speed is the memory bandwidth divided by the
weight bytes: bf16 reads 2 bytes a weight, Q8_0 1 + 4/32 = 1.125, float32 4.

Layouts (W is (N, K) as Linear stores it, one output row per weight row):
- bf16: w (N, K) uint16, the top half of each float32 (`bf16_to_float32`). Widening is exact.
- Q8_0: q (N, K) int8 and s (N, K // 32) float32; value = q[n, k] * s[n, k // 32]. q is one flat
  row per output, not an array of 34-byte blocks as llama.cpp's file stores it: the kernel walks
  a row of q as one contiguous stream and a row of s beside it, so the loop over k is one flat
  loop LLVM vectorises (16 int8 -> float32 conversions and FMAs per instruction), reading the
  scale as s[n, k >> 5]. The block structure lives only in the index.

Why flat (bench/quant.py --kernels; measured on the output head's shape, 151,936 x 1,024, one
thread, a busy machine: float32 69 ms, q8 flat 32 ms, q8 nested 401 ms): the same product as
nested loops (for each block, a 32-long inner dot, then times its scale; bench/quant.py keeps
that form to time it) reads the same bytes
~12x slower. Numba's LLVM unrolls the constant 32-long inner loop completely, which leaves the
loop over blocks innermost, and vectorises that one: each vector lane takes another block, so
every x and q value is fetched with a stride-32 gather (its machine code has 160 vgather and 483
vextract instructions; the flat loop's has none: sign-extend 16 int8, convert, one FMA).

Decode GEMV (M <= GEMV_MAX_ROWS rows of x): the kernels below, rows split over the thread pool
(`run_chunks`) in chunks of at least MIN_ROWS rows. bf16 widens each value where the FMA reads
it: zero-extend to uint32, shift up 16, reinterpret as float32 (`_as_float32`, an LLVM bitcast
that costs nothing), so the loop vectorises as float32's does with half the bytes to load.

Prompts (prefill), the rule `matmul_bf16` / `matmul_q8` follow, from `bench/quant.py --prefill`
(Qwen3-0.6B's 6144 x 1024 and 1024 x 3072 weights, M = 8-512 rows of x; bench/README.md has the
figures): up to GEMM_MAX_ROWS rows, a Numba GEMM over the bits / blocks (`_gemm_*`: the GEMV loop
with four rows of x per pass, so each weight is widened once for four FMAs); it reads the weight
once in its small format, and ran 2-10x faster than widening and BLAS at M <= 16, even at 32.
Above that BLAS's blocked kernel wins (2-3x at M = 512): `_widen_rows_*` widen ROW_TILE weight
rows at a time into a float32 tile that np.matmul multiplies, the tile reused by every row of x;
the widening then costs a few % of the product (tiles+BLAS ran within 10% of float32 np.matmul).
"""
import numpy as np

from ._jit import HAVE_NUMBA, chunk_bounds, chunks, njit, numba, run_chunks

if HAVE_NUMBA:
    import numba.extending

BLOCK = 32          # Q8_0: weights per scale
GEMV_MAX_ROWS = 4   # rows of x up to which the GEMV kernels answer
GEMM_MAX_ROWS = 32  # ... the Numba GEMM (four rows of x a pass); above, widened tiles + BLAS
MIN_ROWS = 256      # weight rows per thread chunk (a chunk must pay for the hand-off)
ROW_TILE = 512      # weight rows widened at a time for the prefill product


# -- references (NumPy) -----------------------------------------------------------------------

def bf16_to_float32_ref(w: np.ndarray) -> np.ndarray:
    """uint16 bf16 bits -> float32 (exact)."""
    return (w.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16_ref(w: np.ndarray) -> np.ndarray:
    """float32 -> the nearest bf16 (round to nearest even), as uint16 bits; nan stays nan."""
    bits = np.ascontiguousarray(w, dtype=np.float32).view(np.uint32)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))) >> 16
    nan = np.isnan(w)
    return np.where(nan, (bits >> 16) | np.uint32(0x40), rounded).astype(np.uint16)


def q8_quantize_ref(w: np.ndarray):
    """float (N, K), K a multiple of 32 -> (q int8 (N, K), s float32 (N, K // 32)): per block
    the scale is max|w| / 127 and q = round(w / scale) (0 for an all-zero block)."""
    w = np.asarray(w, dtype=np.float32)
    n, k = w.shape
    blocks = w.reshape(n, k // BLOCK, BLOCK)
    s = (np.abs(blocks).max(axis=2) / 127.0).astype(np.float32)                 # (N, K/32)
    inv = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)
    q = np.clip(np.rint(blocks * inv[:, :, None]), -127, 127).astype(np.int8)  # (N, K/32, 32)
    return q.reshape(n, k), s


def q8_dequantize_ref(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(q (N, K) int8, s (N, K // 32)) -> float32 (N, K)."""
    n, k = q.shape
    return (q.reshape(n, k // BLOCK, BLOCK) * s[:, :, None]).reshape(n, k).astype(np.float32)


def gemv_bf16_ref(x, w):
    """x (M, K) float32 @ widen(w (N, K) uint16).T -> (M, N)."""
    return x @ bf16_to_float32_ref(w).T


def gemv_q8_ref(x, q, s):
    """x (M, K) float32 @ dequantize(q, s).T -> (M, N)."""
    return x @ q8_dequantize_ref(q, s).T


# -- kernels (Numba) --------------------------------------------------------------------------

if HAVE_NUMBA and not numba.config.DISABLE_JIT:
    @numba.extending.intrinsic
    def _as_float32(typingctx, bits):
        """The float32 whose bits are the uint32 `bits` (an LLVM bitcast: free, and vectorised)."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(numba.types.float32))
        return numba.types.float32(numba.types.uint32), codegen
else:
    def _as_float32(bits):
        return np.array(bits, np.uint32).view(np.float32)[()]


@njit(fastmath={"reassoc", "contract"})
def _gemv_bf16(x, w, c, chunk, nchunks):
    # c[:, rows] = x (M, K) @ widen(w[rows]).T for this chunk's rows; reassoc: 16 partial sums.
    # Each bf16 is widened in the register that feeds the FMA (zero-extend, shift, bitcast): a
    # two-pass form (widen a row into a float32 buffer, then dot) ran 54 ms on the head shape
    # where this runs 37 and float32 70 (one thread, busy machine; bench/quant.py --kernels)
    M, K = x.shape
    n0, n1 = chunk_bounds(chunk, nchunks, w.shape[0])
    for n in range(n0, n1):
        wn = w[n]
        for m in range(M):
            xm = x[m]
            acc = np.float32(0.0)
            for k in range(K):
                acc += xm[k] * _as_float32(np.uint32(wn[k]) << np.uint32(16))
            c[m, n] = acc


@njit(fastmath={"reassoc", "contract"})
def _gemv_q8(x, q, s, c, chunk, nchunks):
    # c[:, rows] = x (M, K) @ (q * s)[rows].T: one flat loop over k, the scale read as s[n, k >> 5]
    M, K = x.shape
    n0, n1 = chunk_bounds(chunk, nchunks, q.shape[0])
    for n in range(n0, n1):
        qn = q[n]
        sn = s[n]
        for m in range(M):
            xm = x[m]
            acc = np.float32(0.0)
            for k in range(K):
                acc += xm[k] * (np.float32(qn[k]) * sn[k >> 5])
            c[m, n] = acc


@njit(fastmath={"reassoc", "contract"})
def _gemm_bf16(x, w, c, chunk, nchunks):
    # c[:, rows] = x (M, K) @ widen(w[rows]).T for M a multiple of 4, four rows of x at a time:
    # each weight value is widened once for four FMAs (the GEMV kernel above widens it once per
    # row of x; gemm_bf16 hands it the last M % 4 rows)
    M, K = x.shape
    n0, n1 = chunk_bounds(chunk, nchunks, w.shape[0])
    for n in range(n0, n1):
        wn = w[n]
        for m in range(0, M - 3, 4):
            x0, x1, x2, x3 = x[m], x[m + 1], x[m + 2], x[m + 3]
            a0 = a1 = a2 = a3 = np.float32(0.0)
            for k in range(K):
                v = _as_float32(np.uint32(wn[k]) << np.uint32(16))
                a0 += x0[k] * v
                a1 += x1[k] * v
                a2 += x2[k] * v
                a3 += x3[k] * v
            c[m, n], c[m + 1, n], c[m + 2, n], c[m + 3, n] = a0, a1, a2, a3


@njit(fastmath={"reassoc", "contract"})
def _gemm_q8(x, q, s, c, chunk, nchunks):
    # c[:, rows] = x (M, K) @ (q * s)[rows].T for M a multiple of 4, four rows of x at a time (as
    # _gemm_bf16; gemm_q8 hands the last M % 4 rows to the GEMV kernel)
    M, K = x.shape
    n0, n1 = chunk_bounds(chunk, nchunks, q.shape[0])
    for n in range(n0, n1):
        qn = q[n]
        sn = s[n]
        for m in range(0, M - 3, 4):
            x0, x1, x2, x3 = x[m], x[m + 1], x[m + 2], x[m + 3]
            a0 = a1 = a2 = a3 = np.float32(0.0)
            for k in range(K):
                v = np.float32(qn[k]) * sn[k >> 5]
                a0 += x0[k] * v
                a1 += x1[k] * v
                a2 += x2[k] * v
                a3 += x3[k] * v
            c[m, n], c[m + 1, n], c[m + 2, n], c[m + 3, n] = a0, a1, a2, a3


@njit
def _widen_rows_bf16(w, r0, r1, out):
    # out[:r1-r0] (float32) = widen(w[r0:r1]), as uint32 bits shifted up
    bits = out.view(np.uint32)
    K = w.shape[1]
    for r in range(r0, r1):
        wr = w[r]
        br = bits[r - r0]                  # row slices: no wraparound checks, a vectorised loop
        for k in range(K):
            br[k] = np.uint32(wr[k]) << np.uint32(16)


@njit
def _widen_rows_q8(q, s, r0, r1, out):
    # out[:r1-r0] (float32) = q[r0:r1] * s[r0:r1] blockwise. LLVM leaves this loop scalar (no
    # vector code, with or without fastmath, flat or per block); it costs a few % of the BLAS
    # product of the prompt of more than GEMM_MAX_ROWS rows that follows (bench/quant.py --prefill)
    K = q.shape[1]
    for r in range(r0, r1):
        qr = q[r]
        sr = s[r]
        o = out[r - r0]
        for k in range(K):
            o[k] = np.float32(qr[k]) * sr[k >> 5]


def _check_x(x, K):
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != K:
        raise ValueError(f"x of shape {x.shape} does not fit a weight with {K} columns")
    return x


def gemv_bf16(x, w, out=None):
    """x (M, K) float32 @ widen(w (N, K) uint16).T -> (M, N) float32, rows over the pool."""
    x = _check_x(x, w.shape[1])
    c = np.empty((x.shape[0], w.shape[0]), np.float32) if out is None else out
    if c.size:
        run_chunks(_gemv_bf16, chunks(w.shape[0], MIN_ROWS), x, w, c)
    return c


def gemv_q8(x, q, s, out=None):
    """x (M, K) float32 @ (q * s).T -> (M, N) float32, rows over the pool."""
    x = _check_x(x, q.shape[1])
    c = np.empty((x.shape[0], q.shape[0]), np.float32) if out is None else out
    if c.size:
        run_chunks(_gemv_q8, chunks(q.shape[0], MIN_ROWS), x, q, s, c)
    return c


def gemm_bf16(x, w):
    """x (M, K) float32 @ widen(w (N, K) uint16).T -> (M, N), the Numba GEMM over the bits."""
    x = _check_x(x, w.shape[1])
    c = np.empty((x.shape[0], w.shape[0]), np.float32)
    whole = x.shape[0] - x.shape[0] % 4                # rows in groups of four: the GEMM
    if whole and w.shape[0]:
        run_chunks(_gemm_bf16, chunks(w.shape[0], MIN_ROWS), x[:whole], w, c[:whole])
    if whole < x.shape[0]:                             # the other 1-3 rows: the GEMV
        gemv_bf16(x[whole:], w, out=c[whole:])
    return c


def gemm_q8(x, q, s):
    """x (M, K) float32 @ (q * s).T -> (M, N), the Numba GEMM over the blocks."""
    x = _check_x(x, q.shape[1])
    c = np.empty((x.shape[0], q.shape[0]), np.float32)
    whole = x.shape[0] - x.shape[0] % 4                # rows in groups of four: the GEMM
    if whole and q.shape[0]:
        run_chunks(_gemm_q8, chunks(q.shape[0], MIN_ROWS), x[:whole], q, s, c[:whole])
    if whole < x.shape[0]:                             # the other 1-3 rows: the GEMV
        gemv_q8(x[whole:], q, s, out=c[whole:])
    return c


def tiled_bf16(x, w):
    """x (M, K) @ widen(w).T by widened float32 tiles and np.matmul (BLAS)."""
    x = _check_x(x, w.shape[1])
    return _tiled(x, w.shape[0], lambda r0, r1, tile: _widen_rows_bf16(w, r0, r1, tile))


def tiled_q8(x, q, s):
    """x (M, K) @ (q * s).T by widened float32 tiles and np.matmul (BLAS)."""
    x = _check_x(x, q.shape[1])
    return _tiled(x, q.shape[0], lambda r0, r1, tile: _widen_rows_q8(q, s, r0, r1, tile))


def _tiled(x, n_rows, widen):
    """x (M, K) @ W.T, W widened ROW_TILE rows at a time by widen(r0, r1, tile) and multiplied
    by np.matmul (BLAS)."""
    c = np.empty((x.shape[0], n_rows), np.float32)
    tile = np.empty((min(ROW_TILE, n_rows), x.shape[1]), np.float32)
    for r0 in range(0, n_rows, ROW_TILE):
        r1 = min(r0 + ROW_TILE, n_rows)
        widen(r0, r1, tile)
        c[:, r0:r1] = x @ tile[:r1 - r0].T   # (a strided out= would leave BLAS)
    return c


def matmul_bf16(x, w):
    """x (M, K) @ widen(w).T: the GEMV kernel for a few rows, the Numba GEMM for a short prompt,
    widened tiles and BLAS for a longer one (the module docstring)."""
    x = _check_x(x, w.shape[1])
    if x.shape[0] <= GEMV_MAX_ROWS:
        return gemv_bf16(x, w)
    return gemm_bf16(x, w) if x.shape[0] <= GEMM_MAX_ROWS else tiled_bf16(x, w)


def matmul_q8(x, q, s):
    """x (M, K) @ (q * s).T: the GEMV kernel for a few rows, the Numba GEMM for a short prompt,
    widened tiles and BLAS for a longer one (the module docstring)."""
    x = _check_x(x, q.shape[1])
    if x.shape[0] <= GEMV_MAX_ROWS:
        return gemv_q8(x, q, s)
    return gemm_q8(x, q, s) if x.shape[0] <= GEMM_MAX_ROWS else tiled_q8(x, q, s)


def take_bf16(w, idx):
    """Rows `idx` (1-D int) of widen(w) -> (len(idx), K) float32 (the embedding lookup)."""
    return bf16_to_float32_ref(w[idx])


def take_q8(q, s, idx):
    """Rows `idx` (1-D int) of q * s -> (len(idx), K) float32 (the embedding lookup)."""
    return q8_dequantize_ref(q[idx], s[idx])
