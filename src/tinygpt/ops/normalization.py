"""Layer normalisation (book section 4.2) and inverted dropout (section 3.5.2)."""
import numpy as np

from .. import kernels
from ..core.autograd import Function
from ..core.dtypes import require_float
from ..core.random import dropout_seed
from ..core.tensor import as_tensor
from ..errors import InputError, InputTypeError


class LayerNormFn(Function):
    """Normalise over the last dim with the biased variance, then scale and shift.
    The kernel saves mean and 1/std so backward needs no second pass over statistics."""

    def forward(self, x, scale, shift, eps):
        self.shape = x.shape
        self.x2d = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
        self.scale = scale
        y, self.mean, self.rstd = kernels.layernorm_forward(self.x2d, scale, shift, eps)
        return y.reshape(self.shape)

    def backward(self, g):
        g2d = np.ascontiguousarray(g.reshape(-1, g.shape[-1]))
        dx, dscale, dshift = kernels.layernorm_backward(g2d, self.x2d, self.scale, self.mean, self.rstd)
        return dx.reshape(self.shape), dscale, dshift


def layer_norm(x, scale, shift, eps: float = 1e-5):
    x, scale, shift = as_tensor(x), as_tensor(scale), as_tensor(shift)
    require_float(x.dtype, "layer_norm")
    d = x.shape[-1] if x.ndim else None
    if scale.shape != (d,) or shift.shape != (d,):
        raise InputError(f"layer_norm: scale {scale.shape} and shift {shift.shape} must both be "
                         f"({d},) for input of shape {x.shape}")
    if not (x.dtype == scale.dtype == shift.dtype):
        raise InputTypeError(f"layer_norm: dtypes differ: x {x.dtype}, scale {scale.dtype}, shift {shift.dtype}")
    return LayerNormFn.apply(x, scale, shift, eps=float(eps))


class DropoutFn(Function):
    """Inverted dropout: kept values are rescaled by 1 / (1 - p) at train time, so eval does nothing."""
    saves_inputs = False  # backward needs only the mask

    def forward(self, a, p):
        seed = dropout_seed(a.size)  # the mask is a hash of (seed, position)
        out, self.keep = kernels.dropout_forward(a, p, seed)
        self.p = p
        return out

    def backward(self, g):
        return kernels.dropout_backward(g, self.keep, self.p)


def dropout(a, p: float = 0.5, training: bool = True):
    if not 0.0 <= p <= 1.0:
        raise InputError(f"dropout probability must be in [0, 1], got {p}")
    a = as_tensor(a)
    if not training:
        return a
    require_float(a.dtype, "dropout")
    if p == 0.0:
        return a
    if p == 1.0:
        return a * 0.0
    return DropoutFn.apply(a, p=float(p))
