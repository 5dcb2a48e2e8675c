"""Softmax family, GELU (book sections 3.3-3.5 and 4.3) and log-sigmoid (the DPO loss).

The row softmax, the attention softmax fused with its 1/sqrt(d) scale and causal mask, and GELU
run in `tinygpt.kernels`; `log_softmax` is plain NumPy (it only feeds small heads and tests; the
training loss uses the fused cross-entropy kernel)."""
import numpy as np

from .. import kernels
from ..core.autograd import Function
from ..core.dtypes import require_float
from ..core.random import dropout_seed
from ..core.tensor import as_tensor
from .shape import _axis
from ..errors import InputError


def _last_axis_view(a, axis):
    return a if axis == a.ndim - 1 else np.moveaxis(a, axis, -1)


class Softmax(Function):
    saves_inputs = False  # backward reads the output
    def forward(self, a, axis):
        self.axis = axis
        self.out = np.moveaxis(kernels.softmax_forward(_last_axis_view(a, axis)), -1, axis)
        return self.out

    def backward(self, g):
        y, g = _last_axis_view(self.out, self.axis), _last_axis_view(g, self.axis)
        return np.moveaxis(kernels.softmax_backward(y, g), -1, self.axis)


class LogSoftmax(Function):
    saves_inputs = False  # backward reads the output
    def forward(self, a, axis):
        self.axis = axis
        shifted = a - a.max(axis=axis, keepdims=True)
        self.out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        return self.out

    def backward(self, g):
        return g - np.exp(self.out) * g.sum(axis=self.axis, keepdims=True)


class LogSigmoid(Function):
    """log(sigmoid(x)) = min(x, 0) - log(1 + exp(-|x|)): exp never sees a positive argument, so
    no overflow for large |x| and no log(0) for very negative x (where the naive form gives -inf).
    The gradient is sigmoid(-x), computed from the same exp(-|x|)."""

    def forward(self, a):
        self.a = a
        self.exp_neg_abs = np.exp(-np.abs(a))  # in (0, 1]
        return np.minimum(a, 0) - np.log1p(self.exp_neg_abs)

    def backward(self, g):
        e = self.exp_neg_abs
        sigmoid_of_minus_a = np.where(self.a >= 0, e, 1) / (1 + e)
        return g * sigmoid_of_minus_a


class ScaledCausalSoftmax(Function):
    """softmax(scale * scores) where query i may only see keys up to its own position, then
    (when dropout_p > 0) inverted dropout of those attention weights. No (T, T) mask array
    exists: the kernel skips the masked entries, and drops weights while each row is in cache."""
    saves_inputs = False  # backward reads the output

    def forward(self, scores, scale, dropout_p):
        self.scale, self.p = scale, dropout_p
        if dropout_p == 0.0:
            self.out = kernels.causal_softmax_forward(scores, scale)
            return self.out
        seed = dropout_seed(scores.size)  # the mask is a hash of (seed, position)
        dropped, self.out, self.keep = kernels.causal_softmax_dropout_forward(scores, scale, dropout_p, seed)
        return dropped

    def backward(self, g):
        if self.p == 0.0:
            return kernels.causal_softmax_backward(self.out, g, self.scale)
        return kernels.causal_softmax_dropout_backward(self.out, self.keep, g, self.scale, self.p)


class GeluFn(Function):
    def forward(self, a):
        self.a = a
        return kernels.gelu_forward(a)

    def backward(self, g):
        return kernels.gelu_backward(self.a, g)


def softmax(a, dim=-1):
    a = as_tensor(a)
    require_float(a.dtype, "softmax")
    return Softmax.apply(a, axis=_axis(dim, a.ndim, "softmax"))


def log_softmax(a, dim=-1):
    a = as_tensor(a)
    require_float(a.dtype, "log_softmax")
    return LogSoftmax.apply(a, axis=_axis(dim, a.ndim, "log_softmax"))


def logsigmoid(a):
    """log(sigmoid(a)), elementwise and numerically stable (torch.nn.functional.logsigmoid); the
    DPO loss is -logsigmoid(beta * margin) (tinygpt.finetune.dpo)."""
    a = as_tensor(a)
    require_float(a.dtype, "logsigmoid")
    return LogSigmoid.apply(a)


def scaled_causal_softmax(scores, scale: float, dropout_p: float = 0.0):
    """Attention weights softmax(scale * scores) under the causal mask (book 3.5), followed by
    dropout with probability `dropout_p` (pass 0.0 in eval mode), both in one kernel pass."""
    scores = as_tensor(scores)
    require_float(scores.dtype, "scaled_causal_softmax")
    if scores.ndim < 2 or scores.shape[-1] < scores.shape[-2]:
        raise InputError(f"scaled_causal_softmax needs scores (..., queries, keys) with keys >= "
                         f"queries, got shape {scores.shape}")
    if not 0.0 <= dropout_p <= 1.0:
        raise InputError(f"dropout probability must be in [0, 1], got {dropout_p}")
    return ScaledCausalSoftmax.apply(scores, scale=float(scale), dropout_p=float(dropout_p))


def gelu(a):
    """GELU, tanh approximation (GPT-2's and the book's), not the exact erf form."""
    a = as_tensor(a)
    require_float(a.dtype, "gelu")
    return GeluFn.apply(a)
