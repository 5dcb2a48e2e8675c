"""tinygpt.kernels: the engine's hot loops, each as a plain NumPy reference beside a Numba kernel.

``TINYGPT_KERNELS`` is read once, at import: ``numba`` (default) exports the fast kernels, ``numpy``
exports the references (plain NumPy a learner can step through). Any other value raises ValueError
(`import tinygpt` checks it first, in tinygpt/kernel_choice.py, so the `tinygpt` command says it in one line).

Every function takes and returns plain ndarrays (float32 or float64) and keeps the input dtype.
This package is a leaf: it imports NumPy and Numba only, never tinygpt or torch.
"""
import os

from . import (adamw, attention, causal_attention, cross_entropy, dropout, embedding, gelu, gemm,
               layernorm, rmsnorm, silu, softmax)
from ._jit import HAVE_NUMBA, num_threads, set_num_threads

_CHOICES = ("numba", "numpy")   # as tinygpt/kernel_choice.py, which `import tinygpt` checks first

BACKEND = os.environ.get("TINYGPT_KERNELS", "numba").strip().lower() or "numba"
if BACKEND not in _CHOICES:
    raise ValueError(f"TINYGPT_KERNELS={os.environ.get('TINYGPT_KERNELS')!r}: "
                     f"expected one of {', '.join(_CHOICES)}")
if BACKEND == "numba" and not HAVE_NUMBA:  # pragma: no cover
    raise ImportError("TINYGPT_KERNELS=numba needs numba installed (or set TINYGPT_KERNELS=numpy)")
USE_NUMBA = BACKEND == "numba"

# The kernels the engine calls, each spelled out so go-to-definition and grep lead to it.
if USE_NUMBA:
    matmul = gemm.matmul_numba
    softmax_forward = softmax.softmax_forward_numba
    softmax_backward = softmax.softmax_backward_numba
    causal_softmax_forward = softmax.causal_softmax_forward_numba
    causal_softmax_backward = softmax.causal_softmax_backward_numba
    causal_softmax_dropout_forward = softmax.causal_softmax_dropout_forward_numba
    causal_softmax_dropout_backward = softmax.causal_softmax_dropout_backward_numba
    cached_attention = attention.cached_attention_numba
    causal_attention_forward = causal_attention.causal_attention_forward_numba
    causal_attention_backward = causal_attention.causal_attention_backward_numba
    layernorm_forward = layernorm.layernorm_forward_numba
    layernorm_backward = layernorm.layernorm_backward_numba
    rmsnorm_forward = rmsnorm.rmsnorm_forward_numba
    rmsnorm_backward = rmsnorm.rmsnorm_backward_numba
    gelu_forward = gelu.gelu_forward_numba
    gelu_backward = gelu.gelu_backward_numba
    silu_forward = silu.silu_forward_numba
    silu_backward = silu.silu_backward_numba
    cross_entropy_forward = cross_entropy.cross_entropy_forward_numba
    cross_entropy_backward = cross_entropy.cross_entropy_backward_numba
    adamw_step = adamw.adamw_step_numba
    embedding_backward = embedding.embedding_backward_numba
    dropout_forward = dropout.dropout_forward_numba
    dropout_backward = dropout.dropout_backward_numba
else:
    matmul = gemm.matmul_ref
    softmax_forward = softmax.softmax_forward_ref
    softmax_backward = softmax.softmax_backward_ref
    causal_softmax_forward = softmax.causal_softmax_forward_ref
    causal_softmax_backward = softmax.causal_softmax_backward_ref
    causal_softmax_dropout_forward = softmax.causal_softmax_dropout_forward_ref
    causal_softmax_dropout_backward = softmax.causal_softmax_dropout_backward_ref
    cached_attention = attention.cached_attention_ref
    causal_attention_forward = causal_attention.causal_attention_forward_ref
    causal_attention_backward = causal_attention.causal_attention_backward_ref
    layernorm_forward = layernorm.layernorm_forward_ref
    layernorm_backward = layernorm.layernorm_backward_ref
    rmsnorm_forward = rmsnorm.rmsnorm_forward_ref
    rmsnorm_backward = rmsnorm.rmsnorm_backward_ref
    gelu_forward = gelu.gelu_forward_ref
    gelu_backward = gelu.gelu_backward_ref
    silu_forward = silu.silu_forward_ref
    silu_backward = silu.silu_backward_ref
    cross_entropy_forward = cross_entropy.cross_entropy_forward_ref
    cross_entropy_backward = cross_entropy.cross_entropy_backward_ref
    adamw_step = adamw.adamw_step_ref
    embedding_backward = embedding.embedding_backward_ref
    dropout_forward = dropout.dropout_forward_ref
    dropout_backward = dropout.dropout_backward_ref

# Both implementations of every kernel, whatever the backend (the tests compare them).
REFERENCE = {
    "matmul": gemm.matmul_ref,
    "softmax_forward": softmax.softmax_forward_ref,
    "softmax_backward": softmax.softmax_backward_ref,
    "causal_softmax_forward": softmax.causal_softmax_forward_ref,
    "causal_softmax_backward": softmax.causal_softmax_backward_ref,
    "causal_softmax_dropout_forward": softmax.causal_softmax_dropout_forward_ref,
    "causal_softmax_dropout_backward": softmax.causal_softmax_dropout_backward_ref,
    "cached_attention": attention.cached_attention_ref,
    "causal_attention_forward": causal_attention.causal_attention_forward_ref,
    "causal_attention_backward": causal_attention.causal_attention_backward_ref,
    "layernorm_forward": layernorm.layernorm_forward_ref,
    "layernorm_backward": layernorm.layernorm_backward_ref,
    "rmsnorm_forward": rmsnorm.rmsnorm_forward_ref,
    "rmsnorm_backward": rmsnorm.rmsnorm_backward_ref,
    "gelu_forward": gelu.gelu_forward_ref,
    "gelu_backward": gelu.gelu_backward_ref,
    "silu_forward": silu.silu_forward_ref,
    "silu_backward": silu.silu_backward_ref,
    "cross_entropy_forward": cross_entropy.cross_entropy_forward_ref,
    "cross_entropy_backward": cross_entropy.cross_entropy_backward_ref,
    "adamw_step": adamw.adamw_step_ref,
    "embedding_backward": embedding.embedding_backward_ref,
    "dropout_forward": dropout.dropout_forward_ref,
    "dropout_backward": dropout.dropout_backward_ref,
}
NUMBA = {
    "matmul": gemm.matmul_numba,
    "softmax_forward": softmax.softmax_forward_numba,
    "softmax_backward": softmax.softmax_backward_numba,
    "causal_softmax_forward": softmax.causal_softmax_forward_numba,
    "causal_softmax_backward": softmax.causal_softmax_backward_numba,
    "causal_softmax_dropout_forward": softmax.causal_softmax_dropout_forward_numba,
    "causal_softmax_dropout_backward": softmax.causal_softmax_dropout_backward_numba,
    "cached_attention": attention.cached_attention_numba,
    "causal_attention_forward": causal_attention.causal_attention_forward_numba,
    "causal_attention_backward": causal_attention.causal_attention_backward_numba,
    "layernorm_forward": layernorm.layernorm_forward_numba,
    "layernorm_backward": layernorm.layernorm_backward_numba,
    "rmsnorm_forward": rmsnorm.rmsnorm_forward_numba,
    "rmsnorm_backward": rmsnorm.rmsnorm_backward_numba,
    "gelu_forward": gelu.gelu_forward_numba,
    "gelu_backward": gelu.gelu_backward_numba,
    "silu_forward": silu.silu_forward_numba,
    "silu_backward": silu.silu_backward_numba,
    "cross_entropy_forward": cross_entropy.cross_entropy_forward_numba,
    "cross_entropy_backward": cross_entropy.cross_entropy_backward_numba,
    "adamw_step": adamw.adamw_step_numba,
    "embedding_backward": embedding.embedding_backward_numba,
    "dropout_forward": dropout.dropout_forward_numba,
    "dropout_backward": dropout.dropout_backward_numba,
}

__all__ = ["BACKEND", "REFERENCE", "NUMBA", "warmup", "num_threads", "set_num_threads"] + list(REFERENCE)


def warmup(dtype="float32"):
    """Call every Numba kernel the engine dispatches to once on tiny `dtype` inputs (compiles, or
    loads from the disk cache). The teaching GEMM (``gemm.gemm_numba``) is left out: it compiles on
    its first call.

    Kernels otherwise compile lazily on first use; tests and the bench call this to see (and pay)
    the compile budget up front. Returns the seconds it took.
    """
    import time

    import numpy as np

    t0 = time.perf_counter()
    dt = np.dtype(dtype)
    x = np.linspace(-2.0, 2.0, 6 * 8, dtype=dt).reshape(2, 3, 8)
    gemm.gemv_numba(x[0], x[1])  # the one Numba product the rule selects (gemm_numba: not warmed)
    y = softmax.softmax_forward_numba(x)
    softmax.softmax_backward_numba(y, x)
    y = softmax.causal_softmax_forward_numba(x, 0.5)
    softmax.causal_softmax_backward_numba(y, x, 0.5)
    z, y, keep = softmax.causal_softmax_dropout_forward_numba(x, 0.5, 0.5, 1)
    softmax.causal_softmax_dropout_backward_numba(y, keep, z, 0.5, 0.5)
    attention.cached_attention_numba(x[None, :, :1], x[None], x[None], 3, 0.5)
    o, lse = causal_attention.causal_attention_forward_numba(x[None], x[None], x[None], 0.5, 0.5, 1)
    causal_attention.causal_attention_backward_numba(x[None], x[None], x[None], o, lse, o, 0.5, 0.5, 1)
    x2 = x.reshape(6, 8)
    w = np.ones(8, dt)
    y, mean, rstd = layernorm.layernorm_forward_numba(x2, w, w, 1e-5)
    layernorm.layernorm_backward_numba(x2, x2, w, mean, rstd)
    y, rstd = rmsnorm.rmsnorm_forward_numba(x2, w, 1e-6)
    rmsnorm.rmsnorm_backward_numba(x2, x2, w, rstd)
    gelu.gelu_backward_numba(x2, gelu.gelu_forward_numba(x2))
    silu.silu_backward_numba(x2, silu.silu_forward_numba(x2))
    t = np.array([1, -100, 2, 3, 4, 5], np.int64)
    _, lse = cross_entropy.cross_entropy_forward_numba(x2, t, -100)
    cross_entropy.cross_entropy_backward_numba(x2, t, lse, -100, 1.0)
    p = np.zeros(8, dt)
    adamw.adamw_step_numba(p, w, np.zeros(8, dt), np.zeros(8, dt), 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    embedding.embedding_backward_numba(t[2:], x2[:4], 6)
    y, keep = dropout.dropout_forward_numba(x2, 0.5, 1)
    dropout.dropout_backward_numba(y, keep, 0.5)
    return time.perf_counter() - t0
