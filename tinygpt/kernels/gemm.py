"""matmul: np.matmul (BLAS) reference and a blocked parallel Numba GEMM, with a shape-class dispatch rule.

The Numba GEMM (``gemm_numba``): C (B, M, N) = A (B, M, K) @ B (B, K, N), all C-contiguous.
Tasks = (batch item, 64-row chunk, 256-column block), split evenly over threads (each task owns
its C tile: no races). Inside a task, K is walked in 256-deep panels (the B panel stays in L2)
and a 4-row x 4-deep micro-kernel updates C rows with a j-loop LLVM vectorises; each C element is
summed in plain k order, so float64 agrees with BLAS to ~1e-15. fastmath={'contract'} only (FMA).

The Numba GEMV (``gemv_numba``): C (M, N) = X (M, K) @ W.T for a few rows M and a weight W (N, K)
stored as Linear keeps it: contiguous dot products, four weight rows at a time, memory-bound, serial.

DISPATCH RULE (``matmul_numba``): by shape class, table ``RULE`` below with the bench numbers behind
it. Every GEMM class goes to np.matmul (OpenBLAS), which was faster on every GPT training shape
measured (``gemm_numba`` stays callable, tested and benched, so a class can be flipped by data);
few-row products against a weight (decoding) go to ``gemv_numba`` on one thread, to BLAS on more.
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
    # check that stops LLVM from vectorising (measured: no packed FMA at all).
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


@njit(fastmath={"reassoc", "contract"})
def _gemv(x, w, c):
    # c (M, N) = x (M, K) @ w (N, K).T for a few rows M (decoding: M = 1), one thread. Memory-bound:
    # each weight value is read once. Four weight rows at a time give the core four independent
    # load streams (one row at a time: 9-13 GB/s, four: 11.5-18 GB/s, OpenBLAS's sgemv 7-16 GB/s).
    # reassoc lets LLVM keep 16 partial sums per dot (vectorised); float64 still agrees to ~1e-15.
    M, K = x.shape
    N = w.shape[0]
    zero = c.dtype.type(0.0)
    n = 0
    while n + 4 <= N:
        w0 = w[n]; w1 = w[n + 1]; w2 = w[n + 2]; w3 = w[n + 3]
        for m in range(M):
            xm = x[m]
            s0 = zero; s1 = zero; s2 = zero; s3 = zero
            for k in range(K):
                v = xm[k]
                s0 += v * w0[k]; s1 += v * w1[k]; s2 += v * w2[k]; s3 += v * w3[k]
            c[m, n] = s0; c[m, n + 1] = s1; c[m, n + 2] = s2; c[m, n + 3] = s3
        n += 4
    while n < N:
        wn = w[n]
        for m in range(M):
            xm = x[m]
            s = zero
            for k in range(K):
                s += xm[k] * wn[k]
            c[m, n] = s
        n += 1


GEMV_MAX_ROWS = 4  # up to this many rows of x, four weight rows are reused from cache for each


def gemv_numba(x, w, out=None):
    """x (M, K) @ w.T for w (N, K) C-contiguous -> (M, N); the decode-time Linear product."""
    x = np.ascontiguousarray(x)
    M, K = x.shape
    c = np.empty((M, w.shape[0]), x.dtype) if out is None else out
    if c.size:
        _gemv(x, w, c)
    return c


# DISPATCH RULE: shape class -> path. Numbers: bench/kernels.py, float32, 2026-12-01, quiet Intel
# Xeon VM (2 vCPUs, AVX-512), "np.matmul ms / Numba GEMM ms" on 1 thread (2 threads):
#   2d            Linear x @ W.T: (512,768)@(768,2304) 0.33 (0.26), (768,3072) 0.27 (0.21),
#                 (512,3072)@(3072,768) 0.30 (0.25), lm head (768,50257) 0.27 (0.21); weight grad
#                 X.T @ G 0.40 (0.38); input grad G @ W 0.53 (0.47); tiny (1024,64)@(64,192) 0.53 (0.22)
#   batched       attention (24,256,64)@(24,64,256) 0.59 (0.49), (24,256,256)@(24,256,64) 0.46 (0.25),
#                 P.T @ dO 0.30 (0.19); small config (32,128,128)@(32,128,64) 0.50 (0.28)
#   batched_small M*N*K <= 64**3 per item: tiny config (64,64,16)@(64,16,64) 0.49 (0.24),
#                 (64,64,64)@(64,64,16) 0.22 (0.14)
# OpenBLAS wins every class: its micro-kernel keeps the C tile in registers across K, ours (LLVM
# without intrinsics, C in memory) reloads and stores C every 4 k-steps. So every class goes to
# BLAS; flip a class to "numba" only on a quiet-machine bench that shows it faster (np.matmul's
# batched attention barely uses a second core, 1.65 ms against torch's 0.80 for q @ k.T on 2
# threads, so the 2-thread "batched" class is where a better kernel would pay).
#   gemv          x (M <= 4, K) @ W.T, W (N, K) C-contiguous: the decode-time Linear, memory-bound.
#                 2026-12-01, quiet Intel Xeon (2 vCPUs, AVX-512), per call inside a real 124M KV-cache
#                 decode (bench/generate.py's model), ms Numba / np.matmul: one thread (768,768) 0.180 / 0.185,
#                 (768,3072) 0.697 / 0.711, (3072,768) 0.688 / 0.696, head (768,50257) 10.72 / 10.95: a 1-3%
#                 win (both stream ~14.5 GB/s, one core's share of memory bandwidth), so "numba".
#                 Several threads: OpenBLAS's threaded gemv runs the head at 4.7 ms (33 GB/s) and the blocks'
#                 products at ~20 GB/s; splitting ours over the thread pool lost both ways, because a hand-
#                 off to a sleeping pool thread costs 25-100 us on this VM, and in a real decode OpenBLAS's
#                 worker thread, which spins ~0.1 s after each call, holds the core our pool thread wants
#                 (head 11.1 ms there against 5.7 ms in isolation). So "blas", and gemv_numba stays serial.
RULE = {  # shape class -> (path on one thread, path on several threads)
    "2d": ("blas", "blas"), "batched": ("blas", "blas"), "batched_small": ("blas", "blas"),
    "gemv": ("numba", "blas"),
}
SMALL_MNK = 64 * 64 * 64


def shape_class(a, b):
    if a.ndim == 2 and b.ndim == 2:
        return "gemv" if a.shape[0] <= GEMV_MAX_ROWS and b.T.flags.c_contiguous else "2d"
    M, K = a.shape[-2:]
    return "batched_small" if M * K * b.shape[-1] <= SMALL_MNK else "batched"


def use_numba_gemm(a, b):
    """The dispatch rule: True -> Numba GEMM, False -> np.matmul."""
    if not HAVE_NUMBA or a.ndim < 2 or b.ndim < 2 or a.dtype != b.dtype:
        return False
    if a.dtype not in (np.float32, np.float64) or a.shape[-1] != b.shape[-2]:
        return False
    return RULE[shape_class(a, b)][num_threads() > 1] == "numba"


def matmul_numba(a, b, out=None):
    if use_numba_gemm(a, b):
        if shape_class(a, b) == "gemv":
            return gemv_numba(a, b.T, out=out)
        c = gemm_numba(a, b)
        if out is None:
            return c
        out[...] = c
        return out
    return np.matmul(a, b, out=out)
