"""embedding backward: scatter-add of output gradients into the weight rows (duplicates accumulate).

Numba path: one serial pass, rows in index order (the same order as ``np.add.at``, so results are
bit-identical). A step's few hundred row adds are too little work for threads (by column blocks,
the race-free way) to pay. What costs is a fresh (50257, 768) float32 dW: np.zeros is lazy, but
NumPy asks for huge pages, so scattered rows fault in zeroed 2 MB pages (bench/kernels.py,
"embedding bwd"). ``out=`` accumulates into a buffer the caller keeps (the reused gradient storage)
instead.

Precondition: every id is in [0, num_embeddings). ``tinygpt.ops.embedding`` checks the ids once, in
the forward; the backward gets the same array and does not check again (the Numba loop would write
outside ``dW`` otherwise).
"""
import numpy as np

from ._jit import njit


def _out(out, num_embeddings, d, dtype):
    if out is None:
        return np.zeros((num_embeddings, d), dtype=dtype)
    if out.shape != (num_embeddings, d) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"embedding_backward: out must be C-contiguous ({num_embeddings}, {d}) {dtype}")
    return out


def embedding_backward_ref(idx, grad, num_embeddings, out=None):
    # idx (*idx_shape) int, grad (*idx_shape, D) -> dW (num_embeddings, D); out: accumulate into it instead
    d = grad.shape[-1]
    dw = _out(out, num_embeddings, d, grad.dtype)
    np.add.at(dw, idx.reshape(-1), grad.reshape(-1, d))
    return dw


@njit
def _emb_bwd(idx, g, dw):
    # idx (R,), g (R, D), dw (V, D)
    for r in range(idx.shape[0]):
        row = dw[idx[r]]
        gr = g[r]
        for j in range(gr.shape[0]):
            row[j] += gr[j]


def embedding_backward_numba(idx, grad, num_embeddings, out=None):
    idx = np.ascontiguousarray(idx, np.int64).reshape(-1)
    d = grad.shape[-1]
    g = np.ascontiguousarray(grad).reshape(-1, d)
    if g.shape[0] != idx.shape[0]:
        raise ValueError(f"embedding_backward: grad shape {grad.shape} does not match idx")
    dw = _out(out, num_embeddings, d, g.dtype)
    _emb_bwd(idx, g, dw)
    return dw
