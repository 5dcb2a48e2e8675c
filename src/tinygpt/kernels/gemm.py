"""matmul: np.matmul (BLAS) reference, a Numba GEMV for decoding, and a blocked Numba GEMM to read.

DISPATCH RULE (``matmul_numba``, decided by ``uses_gemv``): a product of a few rows of x against
a stored weight (``x @ W.T``, W C-contiguous: the decode-time Linear, one row per sequence of a
batched decode) goes to ``gemv_numba``: on one thread for M <= GEMV_MAX_ROWS (16) rows; on more
threads for 2 <= M <= GEMV_MAX_ROWS_SPLIT (4) rows, split over the kernel pool. Every other product,
one row on several threads included, goes to np.matmul (OpenBLAS). The bench behind the numbers:
bench/README.md, "Many-row GEMV" (2026-12-07, Zen 4, busy machine; the same shapes are
bench/kernels.py's "decode" rows, whose "rule" column and closing check say whether the rule
ever takes a path slower than np.matmul). One thread, Qwen3-0.6B and GPT-2 shapes: ours beat
np.matmul 1.25-5.9x at every M in 2..16 (OpenBLAS runs M >= 2 as a small-M sgemm, 3-7x slower than
its own one-row gemv) and 0.93-1.74x at M = 1 (the K = 3072 shapes at 0.93-0.95, noise-level).
Two threads (busy machine, so provisional): 2-4 rows split over the pool beat OpenBLAS's threaded
sgemm 1.03x and up on every shape; at 8-16 rows OpenBLAS won on some shapes (0.75-0.87x), and one
row stays with OpenBLAS's threaded gemv (a tie on a quiet machine: "Matmul dispatch").

The Numba GEMV (``gemv_numba``): C (M, N) = X (M, K) @ W.T for a weight W (N, K) stored as Linear
keeps it: each weight row is read once, one after the next (one sequential stream), and feeds
every row of x (four running sums a pass, in ``_gemv``); memory-bound at M = 1, and bound by the
loads of x from about 8 rows (``_gemv``'s comment). At M = 1 it matches or beats OpenBLAS's sgemv.

The Numba GEMM (``gemm_numba``) is a teaching kernel: the rule never selects it, because OpenBLAS
was faster on every GPT training shape (its micro-kernel keeps the C tile in registers across K;
ours, LLVM without intrinsics, reloads and stores C every 4 k-steps). It stays here, tested
(tests/test_kernels_dispatch.py) and benched (bench/kernels.py's "numba" column), but is not compiled
at ``kernels.warmup``. How it works: C (B, M, N) = A (B, M, K) @ B (B, K, N), all C-contiguous.
Tasks = (batch item, 64-row chunk, 256-column block), split evenly over threads (each task owns
its C tile: no races). Inside a task, K is walked in 256-deep panels (the B panel stays in L2)
and a 4-row x 4-deep micro-kernel updates C rows with a j-loop LLVM vectorises; each C element is
summed in plain k order, so float64 agrees with BLAS to ~1e-15. fastmath={'contract'} only (FMA).
"""
import numpy as np

from ._jit import HAVE_NUMBA, chunk_bounds, chunks, njit, num_threads, run_chunks

MC = 64    # rows per task
NC = 256   # columns per task
KC = 256   # depth of a B panel


def matmul_ref(a, b, out=None):
    # a (..., M, K) @ b (..., K, N) -> (..., M, N), batch dims broadcast; out: write there
    return np.matmul(a, b, out=out)


@njit(fastmath={"contract"})
def _tile(a, b, c, i0, i1, k0, k1, j0, j1):
    # c[i0:i1, j0:j1] += a[i0:i1, k0:k1] @ b[k0:k1, j0:j1]; 2-D C-contiguous arrays.
    # Row *slices* and j loops from 0: with range(j0, j1) Numba adds a negative-index wraparound
    # check that stops LLVM from vectorising (the generated code has no packed FMA at all).
    n = j1 - j0
    i = i0
    while i + 4 <= i1:
        c0 = c[i, j0:j1]; c1 = c[i + 1, j0:j1]; c2 = c[i + 2, j0:j1]; c3 = c[i + 3, j0:j1]
        k = k0
        while k + 4 <= k1:
            r0 = b[k, j0:j1]; r1 = b[k + 1, j0:j1]; r2 = b[k + 2, j0:j1]; r3 = b[k + 3, j0:j1]
            a00 = a[i, k]; a01 = a[i, k + 1]; a02 = a[i, k + 2]; a03 = a[i, k + 3]
            a10 = a[i + 1, k]; a11 = a[i + 1, k + 1]; a12 = a[i + 1, k + 2]; a13 = a[i + 1, k + 3]
            a20 = a[i + 2, k]; a21 = a[i + 2, k + 1]; a22 = a[i + 2, k + 2]; a23 = a[i + 2, k + 3]
            a30 = a[i + 3, k]; a31 = a[i + 3, k + 1]; a32 = a[i + 3, k + 2]; a33 = a[i + 3, k + 3]
            for j in range(n):
                b0 = r0[j]; b1 = r1[j]; b2 = r2[j]; b3 = r3[j]
                c0[j] = c0[j] + a00 * b0 + a01 * b1 + a02 * b2 + a03 * b3
                c1[j] = c1[j] + a10 * b0 + a11 * b1 + a12 * b2 + a13 * b3
                c2[j] = c2[j] + a20 * b0 + a21 * b1 + a22 * b2 + a23 * b3
                c3[j] = c3[j] + a30 * b0 + a31 * b1 + a32 * b2 + a33 * b3
            k += 4
        while k < k1:
            r0 = b[k, j0:j1]
            a00 = a[i, k]; a10 = a[i + 1, k]; a20 = a[i + 2, k]; a30 = a[i + 3, k]
            for j in range(n):
                b0 = r0[j]
                c0[j] = c0[j] + a00 * b0
                c1[j] = c1[j] + a10 * b0
                c2[j] = c2[j] + a20 * b0
                c3[j] = c3[j] + a30 * b0
            k += 1
        i += 4
    while i < i1:
        c0 = c[i, j0:j1]
        for k in range(k0, k1):
            r0 = b[k, j0:j1]
            a00 = a[i, k]
            for j in range(n):
                c0[j] = c0[j] + a00 * r0[j]
        i += 1


@njit(fastmath={"contract"})
def _gemm(a, b, c, chunk, nchunks):
    # a (B, M, K), b (B, K, N), c (B, M, N), C-contiguous; tasks split evenly over chunks
    nb, M, K = a.shape
    N = b.shape[2]
    mt = (M + MC - 1) // MC
    nt = (N + NC - 1) // NC
    t0, t1 = chunk_bounds(chunk, nchunks, nb * mt * nt)
    for t in range(t0, t1):
        bi = t // (mt * nt)
        i0 = (t // nt) % mt * MC
        j0 = t % nt * NC
        i1 = min(i0 + MC, M)
        j1 = min(j0 + NC, N)
        a2 = a[bi]; b2 = b[bi]; c2 = c[bi]
        c2[i0:i1, j0:j1] = 0.0
        for k0 in range(0, K, KC):
            _tile(a2, b2, c2, i0, i1, k0, min(k0 + KC, K), j0, j1)


def gemm_numba(a, b):
    """The Numba GEMM on any shapes np.matmul accepts (batch dims broadcast); no dispatch."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2] or a.dtype != b.dtype:
        return np.matmul(a, b)  # same errors / semantics as NumPy
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    M, K = a.shape[-2:]
    N = b.shape[-1]
    a3 = np.ascontiguousarray(np.broadcast_to(a, batch + (M, K))).reshape(-1, M, K)
    b3 = np.ascontiguousarray(np.broadcast_to(b, batch + (K, N))).reshape(-1, K, N)
    c = np.empty((a3.shape[0], M, N), a.dtype)
    if c.size:
        tasks = a3.shape[0] * -(-M // MC) * -(-N // NC)
        run_chunks(_gemm, chunks(tasks, 1), a3, b3, c)
    return c.reshape(batch + (M, N))


LONG_ROW = 8192  # bytes of a row of x around which _gemv changes its loop order (its comment)


@njit(fastmath={"reassoc", "contract"})
def _rows4x2(x, m, wa, wb, c, n):
    # c[m:m+4, n:n+2] = x[m:m+4] @ [wa, wb].T: eight sums, each x value loaded once for two FMAs
    x0, x1, x2, x3 = x[m], x[m + 1], x[m + 2], x[m + 3]
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = c.dtype.type(0.0)
    for k in range(wa.shape[0]):
        u = wa[k]
        v = wb[k]
        e0, e1, e2, e3 = x0[k], x1[k], x2[k], x3[k]
        a0 += e0 * u
        a1 += e1 * u
        a2 += e2 * u
        a3 += e3 * u
        b0 += e0 * v
        b1 += e1 * v
        b2 += e2 * v
        b3 += e3 * v
    c[m, n], c[m + 1, n], c[m + 2, n], c[m + 3, n] = a0, a1, a2, a3
    c[m, n + 1], c[m + 1, n + 1], c[m + 2, n + 1], c[m + 3, n + 1] = b0, b1, b2, b3


@njit(fastmath={"reassoc", "contract"})
def _rows_left(x, m, wn, c, n):
    # c[m:, n] = x[m:] @ wn for the 0-3 rows from m on, all in one pass over wn
    K = wn.shape[0]
    left = x.shape[0] - m
    zero = c.dtype.type(0.0)
    if left == 1 or (left > 1 and K * x.itemsize > LONG_ROW):  # one dot per row (comment in _gemv)
        for r in range(m, x.shape[0]):
            xr = x[r]
            a0 = zero
            for k in range(K):
                a0 += xr[k] * wn[k]
            c[r, n] = a0
    elif left == 2:
        x0, x1 = x[m], x[m + 1]
        a0 = a1 = zero
        for k in range(K):
            v = wn[k]
            a0 += x0[k] * v
            a1 += x1[k] * v
        c[m, n], c[m + 1, n] = a0, a1
    elif left == 3:
        x0, x1, x2 = x[m], x[m + 1], x[m + 2]
        a0 = a1 = a2 = zero
        for k in range(K):
            v = wn[k]
            a0 += x0[k] * v
            a1 += x1[k] * v
            a2 += x2[k] * v
        c[m, n], c[m + 1, n], c[m + 2, n] = a0, a1, a2


@njit(fastmath={"reassoc", "contract"})
def _gemv(x, w, c, chunk, nchunks):
    # c[:, rows] = x (M, K) @ w[rows].T for this chunk's weight rows. Memory-bound: each weight
    # row is read from memory once, one after the next (one sequential stream, the pattern the
    # prefetchers serve best), and feeds every row of x, four rows of x a pass with four running
    # sums over k (one load of w[n, k] for four FMAs), then the 1-3 rows left over. From 8 rows
    # on, x (8 rows of K: all of L1 at K = 1024) comes from L2 and its loads bound the loop:
    # two weight rows a pass (each x value feeds two FMAs) then ran 1.4-1.6x faster; below 8 one
    # row a pass was faster, except for long rows of x (Qwen3's down_proj, GPT-2's ff2: K = 3072):
    # from LONG_ROW bytes (K = 2048 float32) four rows took pairs too (1.14-1.17x), and above it
    # 2-3 rows one plain dot each (1.15-1.27x; their 2-3 running sums ran slower there).
    # bench/README.md, "Many-row GEMV".
    # reassoc lets LLVM keep 16 partial sums per dot (vectorised); float64 still agrees to ~1e-15.
    M, K = x.shape
    whole = M - M % 4
    n, n1 = chunk_bounds(chunk, nchunks, w.shape[0])
    if M == 1:  # decoding one sequence: the plain dot loop, written out (3-9% faster than the call)
        x0 = x[0]
        zero = c.dtype.type(0.0)
        for r in range(n, n1):
            wn = w[r]
            s = zero
            for k in range(K):
                s += x0[k] * wn[k]
            c[0, r] = s
        return
    if whole >= 8 or (whole == 4 and K * x.itemsize >= LONG_ROW):
        while n + 2 <= n1:
            wa, wb = w[n], w[n + 1]
            for m in range(0, whole, 4):
                _rows4x2(x, m, wa, wb, c, n)
            _rows_left(x, whole, wa, c, n)
            _rows_left(x, whole, wb, c, n + 1)
            n += 2
    zero = c.dtype.type(0.0)
    while n < n1:
        wn = w[n]
        for m in range(0, whole, 4):   # written here: as an @njit call it ran 1.2-1.3x slower
            x0, x1, x2, x3 = x[m], x[m + 1], x[m + 2], x[m + 3]
            a0 = a1 = a2 = a3 = zero
            for k in range(K):
                v = wn[k]
                a0 += x0[k] * v
                a1 += x1[k] * v
                a2 += x2[k] * v
                a3 += x3[k] * v
            c[m, n], c[m + 1, n], c[m + 2, n], c[m + 3, n] = a0, a1, a2, a3
        _rows_left(x, whole, wn, c, n)
        n += 1


GEMV_MAX_ROWS = 16       # one thread: rows of x up to which the GEMV beats np.matmul (rule above)
GEMV_MAX_ROWS_SPLIT = 4  # more threads: 2..this many rows, the GEMV split over the pool
GEMV_MIN_ROWS = 256  # weight rows per thread chunk when the GEMV is split over the pool


def gemv_numba(x, w, out=None, split=False):
    """x (M, K) @ w.T for w (N, K) C-contiguous -> (M, N); the decode-time Linear product."""
    x = np.ascontiguousarray(x)
    M, K = x.shape
    c = np.empty((M, w.shape[0]), x.dtype) if out is None else out
    if c.size:
        if split:
            run_chunks(_gemv, chunks(w.shape[0], GEMV_MIN_ROWS), x, w, c)
        else:
            _gemv(x, w, c, 0, 1)
    return c


def uses_gemv(a, b) -> bool:
    """The dispatch rule: True -> ``gemv_numba(a, b.T)``, False -> np.matmul. Few rows of `a`
    against a stored weight (``b = W.T``, W C-contiguous), float32/float64: up to GEMV_MAX_ROWS
    rows on one thread, 2..GEMV_MAX_ROWS_SPLIT rows on more (split over the pool)."""
    if not (HAVE_NUMBA and a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[0]
            and b.T.flags.c_contiguous and a.dtype == b.dtype and a.dtype in (np.float32, np.float64)):
        return False
    if num_threads() == 1:
        return a.shape[0] <= GEMV_MAX_ROWS
    return 2 <= a.shape[0] <= GEMV_MAX_ROWS_SPLIT


def matmul_numba(a, b, out=None):
    if uses_gemv(a, b):
        return gemv_numba(a, b.T, out=out, split=num_threads() > 1)
    return np.matmul(a, b, out=out)
