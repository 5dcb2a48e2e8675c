"""Matrix product, 2-D and batched with broadcast batch dims (book section 3.3 onwards).

The product itself runs in `kernels.matmul`, which picks BLAS or our Numba GEMM by shape class.
For C = A @ B:  dA = dC @ B^T  and  dB = A^T @ dC  (broadcast batch dims are summed back by the
engine)."""
import numpy as np

from .. import kernels
from ..core.autograd import Function
from ..core.tensor import as_tensor
from .shape import squeeze, unsqueeze
from ..errors import InputError, InputTypeError


class MatMul(Function):
    saves_inputs = "others"  # a for b's gradient, b for a's
    def forward(self, a, b):
        self.a, self.b = a, b
        return kernels.matmul(a, b)

    def backward(self, g):
        ga = kernels.matmul(g, self.b.swapaxes(-1, -2)) if self.needs_input_grad[0] else None
        gb = kernels.matmul(self.a.swapaxes(-1, -2), g) if self.needs_input_grad[1] else None
        return ga, gb


def matmul(a, b):
    a, b = as_tensor(a), as_tensor(b)
    if a.ndim == 0 or b.ndim == 0:
        raise InputError(f"matmul needs at least 1-D operands, got shapes {a.shape} and {b.shape}")
    if a.dtype != b.dtype:
        raise InputTypeError(f"matmul operands have different dtypes {a.dtype} and {b.dtype}")
    if a.dtype.kind != "f":
        raise InputTypeError(f"matmul needs float32/float64 operands, got {a.dtype}")
    if a.ndim == 1 and b.ndim == 1:  # a dot product
        if a.shape != b.shape:
            raise InputError(f"matmul: shapes {a.shape} and {b.shape} do not align")
        return matmul(unsqueeze(a, 0), unsqueeze(b, 1)).reshape(())
    if a.ndim == 1:  # a vector on the left is a row, as in torch.matmul
        return squeeze(matmul(unsqueeze(a, 0), b), -2)
    if b.ndim == 1:
        return squeeze(matmul(a, unsqueeze(b, 1)), -1)
    if a.shape[-1] != b.shape[-2]:
        raise InputError(f"matmul: shapes {a.shape} and {b.shape} do not align "
                         f"({a.shape[-1]} != {b.shape[-2]})")
    if a.shape[:-2] != b.shape[:-2]:
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise InputError(f"matmul: batch dims of shapes {a.shape} and {b.shape} "
                             "cannot be broadcast") from None
    return MatMul.apply(a, b)
