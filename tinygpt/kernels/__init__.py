"""tinygpt.kernels: the engine's hot loops, each as a plain NumPy reference beside a Numba kernel.

``TINYGPT_KERNELS`` is read once, at import: ``numba`` (default) exports the fast kernels, ``numpy``
exports the references (plain NumPy a learner can step through). Any other value raises ValueError.

Every function takes and returns plain ndarrays (float32 or float64) and keeps the input dtype.
This package is a leaf: it imports NumPy and Numba only, never tinygpt or torch.
"""
import os

from . import adamw as _adamw
from . import attention as _attn
from . import cross_entropy as _ce
from . import dropout as _drop
from . import embedding as _emb
from . import gelu as _gelu
from . import gemm as _mm
from . import layernorm as _ln
from . import softmax as _sm
from ._jit import HAVE_NUMBA, num_threads, set_num_threads

_CHOICES = ("numba", "numpy")

BACKEND = os.environ.get("TINYGPT_KERNELS", "numba").strip().lower() or "numba"
if BACKEND not in _CHOICES:
    raise ValueError(f"TINYGPT_KERNELS={os.environ.get('TINYGPT_KERNELS')!r}: "
                     f"expected one of {', '.join(_CHOICES)}")
if BACKEND == "numba" and not HAVE_NUMBA:  # pragma: no cover
    raise ImportError("TINYGPT_KERNELS=numba needs numba installed (or set TINYGPT_KERNELS=numpy)")

_NAMES = (
    (_mm, "matmul"),
    (_sm, "softmax_forward"), (_sm, "softmax_backward"),
    (_sm, "causal_softmax_forward"), (_sm, "causal_softmax_backward"),
    (_sm, "causal_softmax_dropout_forward"), (_sm, "causal_softmax_dropout_backward"),
    (_attn, "cached_attention"),
    (_ln, "layernorm_forward"), (_ln, "layernorm_backward"),
    (_gelu, "gelu_forward"), (_gelu, "gelu_backward"),
    (_ce, "cross_entropy_forward"), (_ce, "cross_entropy_backward"),
    (_adamw, "adamw_step"),
    (_emb, "embedding_backward"),
    (_drop, "dropout_forward"), (_drop, "dropout_backward"),
)

# REFERENCE[name] / NUMBA[name]: both implementations, whatever the backend (tests compare them)
REFERENCE = {name: getattr(mod, name + "_ref") for mod, name in _NAMES}
NUMBA = {name: getattr(mod, name + "_numba") for mod, name in _NAMES}
_CHOSEN = NUMBA if BACKEND == "numba" else REFERENCE

matmul = _CHOSEN["matmul"]
softmax_forward = _CHOSEN["softmax_forward"]
softmax_backward = _CHOSEN["softmax_backward"]
causal_softmax_forward = _CHOSEN["causal_softmax_forward"]
causal_softmax_backward = _CHOSEN["causal_softmax_backward"]
causal_softmax_dropout_forward = _CHOSEN["causal_softmax_dropout_forward"]
causal_softmax_dropout_backward = _CHOSEN["causal_softmax_dropout_backward"]
cached_attention = _CHOSEN["cached_attention"]
layernorm_forward = _CHOSEN["layernorm_forward"]
layernorm_backward = _CHOSEN["layernorm_backward"]
gelu_forward = _CHOSEN["gelu_forward"]
gelu_backward = _CHOSEN["gelu_backward"]
cross_entropy_forward = _CHOSEN["cross_entropy_forward"]
cross_entropy_backward = _CHOSEN["cross_entropy_backward"]
adamw_step = _CHOSEN["adamw_step"]
embedding_backward = _CHOSEN["embedding_backward"]
dropout_forward = _CHOSEN["dropout_forward"]
dropout_backward = _CHOSEN["dropout_backward"]

__all__ = ["BACKEND", "REFERENCE", "NUMBA", "warmup", "num_threads", "set_num_threads"] + [name for _, name in _NAMES]


def warmup(dtype="float32"):
    """Call every Numba kernel once on tiny `dtype` inputs (compiles, or loads from the disk cache).

    Kernels otherwise compile lazily on first use; tests and the bench call this to see (and pay)
    the compile budget up front. Returns the seconds it took.
    """
    import time

    import numpy as np

    t0 = time.perf_counter()
    dt = np.dtype(dtype)
    x = np.linspace(-2.0, 2.0, 6 * 8, dtype=dt).reshape(2, 3, 8)
    f = NUMBA
    f["matmul"](x, x.swapaxes(-1, -2))
    _mm.gemm_numba(x, x.swapaxes(-1, -2))
    _mm.gemv_numba(x[0], x[1])
    y = f["softmax_forward"](x)
    f["softmax_backward"](y, x)
    y = f["causal_softmax_forward"](x, 0.5)
    f["causal_softmax_backward"](y, x, 0.5)
    z, y, keep = f["causal_softmax_dropout_forward"](x, 0.5, 0.5, 1)
    f["causal_softmax_dropout_backward"](y, keep, z, 0.5, 0.5)
    f["cached_attention"](x[None, :, :1], x[None], x[None], 3, 0.5)
    x2 = x.reshape(6, 8)
    w = np.ones(8, dt)
    y, mean, rstd = f["layernorm_forward"](x2, w, w, 1e-5)
    f["layernorm_backward"](x2, x2, w, mean, rstd)
    f["gelu_backward"](x2, f["gelu_forward"](x2))
    t = np.array([1, -100, 2, 3, 4, 5], np.int64)
    _, lse = f["cross_entropy_forward"](x2, t, -100)
    f["cross_entropy_backward"](x2, t, lse, -100, 1.0)
    p = np.zeros(8, dt)
    f["adamw_step"](p, w, np.zeros(8, dt), np.zeros(8, dt), 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    f["embedding_backward"](t[2:], x2[:4], 6)
    y, keep = f["dropout_forward"](x2, 0.5, 1)
    f["dropout_backward"](y, keep, 0.5)
    return time.perf_counter() - t0
