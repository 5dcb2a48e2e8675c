"""Indexing: `x[...]` (slices, ints, None, Ellipsis, integer arrays) and the embedding gather
(book section 2.7). Both backwards scatter the gradient into zeros; repeated indices add up."""
import numpy as np

from .. import kernels
from ..core import buffers
from ..core.autograd import Function
from ..core.dtypes import check_index_array
from ..core.tensor import Tensor, as_tensor
from ..errors import InputIndexError, InputTypeError


def _normalize_index(index):
    """Turn Tensors and lists inside an index into int64/bool ndarrays, rejecting float indices."""
    items = index if isinstance(index, tuple) else (index,)
    out = []
    for item in items:
        if isinstance(item, Tensor):
            item = item.data
        if isinstance(item, list):
            item = np.asarray(item)
        if isinstance(item, np.ndarray) and item.dtype != np.bool_:
            item = check_index_array(item, "an index array")
        elif isinstance(item, (float, np.floating)):
            raise InputTypeError(f"indices must be ints, slices or integer arrays, got float {item}")
        out.append(item)
    return tuple(out)


def _is_basic(index) -> bool:
    return all(isinstance(i, (int, np.integer, slice, type(None), type(Ellipsis))) for i in index)


class GetItem(Function):
    saves_inputs = False
    def forward(self, a, index):
        self.shape, self.dtype, self.index = a.shape, a.dtype, index
        try:
            return np.asarray(a[index])
        except IndexError as err:
            raise InputIndexError(f"index {index} is invalid for a tensor of shape {a.shape}: {err}") from None

    def backward(self, g):
        out = np.zeros(self.shape, self.dtype)
        if _is_basic(self.index):
            out[self.index] = g  # basic indexing never repeats an element
        else:
            np.add.at(out, self.index, g)
        return out


def getitem(a, index):
    return GetItem.apply(as_tensor(a), index=_normalize_index(index))


class EmbeddingFn(Function):
    saves_inputs = False
    def forward(self, weight, idx):
        self.idx, self.num = idx, weight.shape[0]
        return weight[idx]

    def backward(self, g):
        out = buffers.zeros(buffers.EMBEDDING_GRAD, (self.num, g.shape[-1]), g.dtype)
        return kernels.embedding_backward(self.idx, g, self.num, out=out)


def embedding(idx, weight):
    """Rows of `weight` picked by integer ids `idx` (any shape) -> (*idx.shape, emb_dim)."""
    idx = check_index_array(np.asarray(idx.data if isinstance(idx, Tensor) else idx), "embedding ids")
    weight = as_tensor(weight)
    if idx.size and (idx.min() < 0 or idx.max() >= weight.shape[0]):
        bad = idx[(idx < 0) | (idx >= weight.shape[0])].flat[0]
        raise InputIndexError(f"embedding id {bad} is out of range for a table of {weight.shape[0]} rows")
    return EmbeddingFn.apply(weight, idx=idx)
