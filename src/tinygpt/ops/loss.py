"""Cross-entropy over the vocabulary (book section 5.1.2): a fused log-softmax + negative
log-likelihood, mean over the targets that are not `ignore_index` (like PyTorch)."""
import numpy as np

from .. import kernels
from ..core import buffers
from ..core.autograd import Function
from ..core.dtypes import check_index_array, require_float
from ..core.tensor import Tensor, as_tensor
from ..errors import InputError, InputIndexError


class CrossEntropy(Function):
    def forward(self, logits, targets, ignore_index):
        self.logits, self.targets, self.ignore_index = logits, targets, ignore_index
        loss, self.lse = kernels.cross_entropy_forward(logits, targets, ignore_index)
        return np.asarray(loss)

    def backward(self, g):
        return kernels.cross_entropy_backward(self.logits, self.targets, self.lse,
                                              self.ignore_index, float(g),
                                              out=buffers.empty(buffers.CROSS_ENTROPY_GRAD, self.logits.shape,
                                                                self.logits.dtype))


def cross_entropy(logits, targets, ignore_index: int = -100):
    """logits (N, C) and integer targets (N,) -> scalar mean loss."""
    logits = as_tensor(logits)
    require_float(logits.dtype, "cross_entropy logits")
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    targets = check_index_array(targets, "cross_entropy targets")
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise InputError(f"cross_entropy needs logits (N, C) and targets (N,), got {logits.shape} "
                         f"and {targets.shape} (flatten batch and tokens first: "
                         "logits.flatten(0, 1), targets.flatten())")
    _check_range(targets, logits.shape[1], int(ignore_index))
    return CrossEntropy.apply(logits, targets=np.ascontiguousarray(targets),
                              ignore_index=int(ignore_index))


def _check_range(targets, n_classes: int, ignore_index: int) -> None:
    """Each target is a class index in [0, C) or `ignore_index`: name the first that is not (the
    kernel would fail on it with a bare IndexError, or read past the row)."""
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= n_classes))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputIndexError(f"cross_entropy target {int(targets[i])} is out of range for {n_classes} "
                              f"classes (row {i}): targets must lie in [0, {n_classes - 1}] or equal "
                              f"ignore_index ({ignore_index})")
