"""Reductions over `dim` (an int, a tuple, or None for all), with `keepdim` like PyTorch,
plus the non-differentiable `argmax` and `topk` used by generation (book chapter 4-5)."""
import numpy as np

from ..core.autograd import Function
from ..core.dtypes import require_float
from ..core.tensor import Tensor, as_tensor
from ..errors import InputError


def normalize_dims(dim, ndim: int) -> tuple:
    """`dim` as a sorted tuple of non-negative axes; None means every axis."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out, span = [], ndim if ndim > 0 else 1  # (this module's `max` shadows the builtin)
    for d in dims:
        if not -span <= d < span:
            raise InputError(f"dim {d} is out of range for a tensor with {ndim} dims")
        out.append(int(d) % span)
    if len(set(out)) != len(out):
        raise InputError(f"dim {dim} repeats an axis")
    return tuple(sorted(out))


def _expand_back(g, in_shape, axes, keepdim):
    """Reinsert the reduced axes so a reduced gradient broadcasts against the input."""
    if not keepdim and in_shape:
        g = np.expand_dims(g, axes)
    return g


class Sum(Function):
    saves_inputs = False
    def forward(self, a, axes, keepdim):
        self.shape, self.axes, self.keepdim = a.shape, axes, keepdim
        return np.asarray(a.sum(axis=axes, keepdims=keepdim))

    def backward(self, g):
        return np.broadcast_to(_expand_back(g, self.shape, self.axes, self.keepdim), self.shape)


class Mean(Function):
    saves_inputs = False
    def forward(self, a, axes, keepdim):
        self.shape, self.axes, self.keepdim = a.shape, axes, keepdim
        self.count = int(np.prod([a.shape[i] for i in axes])) if a.ndim else 1
        if self.count == 0:  # mean of nothing is NaN, as in torch (np.mean would also warn)
            shape = np.shape(a.sum(axis=axes, keepdims=keepdim))
            return np.full(shape, np.nan, a.dtype)
        return np.asarray(a.mean(axis=axes, keepdims=keepdim))

    def backward(self, g):
        if self.count == 0:  # no input values: an empty gradient
            return np.zeros(self.shape, g.dtype)
        g = _expand_back(g, self.shape, self.axes, self.keepdim) / float(self.count)
        return np.broadcast_to(g, self.shape)


class Max(Function):
    """Ties share the gradient equally (like torch.amax); PyTorch's max(dim) gives it to one index."""
    saves_inputs = False  # backward reads a mask it made

    def forward(self, a, axes, keepdim):
        self.shape, self.axes, self.keepdim = a.shape, axes, keepdim
        out = a.max(axis=axes, keepdims=True)
        self.winners = a == out
        return np.asarray(out if keepdim else out.squeeze(axis=axes) if a.ndim else out)

    def backward(self, g):
        g = _expand_back(g, self.shape, self.axes, self.keepdim)
        counts = self.winners.sum(axis=self.axes, keepdims=True)
        return np.where(self.winners, g / counts.astype(g.dtype), g.dtype.type(0))


class Var(Function):
    """Variance; `unbiased=False` divides by N as the book's LayerNorm does."""
    saves_inputs = False  # backward reads the centred copy it made

    def forward(self, a, axes, keepdim, unbiased):
        self.shape, self.axes, self.keepdim = a.shape, axes, keepdim
        n = int(np.prod([a.shape[i] for i in axes])) if a.ndim else 1
        self.divisor = float(n - 1 if unbiased else n)
        self.centered = a - a.mean(axis=axes, keepdims=True)
        out = (self.centered * self.centered).sum(axis=axes, keepdims=keepdim) / self.divisor
        return np.asarray(out)

    def backward(self, g):
        g = _expand_back(g, self.shape, self.axes, self.keepdim)
        return g * (2.0 / self.divisor) * self.centered


def _reduce(fn, a, dim, keepdim, **options):
    a = as_tensor(a)
    axes = normalize_dims(dim, a.ndim)
    if fn is Max and a.size == 0:
        raise InputError(f"max of an empty tensor (shape {a.shape}) is undefined")
    return fn.apply(a, axes=axes, keepdim=keepdim, **options)


def sum(a, dim=None, keepdim=False):  # noqa: A001 (mirrors torch.sum)
    return _reduce(Sum, a, dim, keepdim)


def mean(a, dim=None, keepdim=False):
    require_float(as_tensor(a).dtype, "mean")
    return _reduce(Mean, a, dim, keepdim)


def max(a, dim=None, keepdim=False):  # noqa: A001 (mirrors torch.max)
    return _reduce(Max, a, dim, keepdim)


def var(a, dim=None, keepdim=False, unbiased=True):
    require_float(as_tensor(a).dtype, "var")
    return _reduce(Var, a, dim, keepdim, unbiased=unbiased)


# --- no gradient ------------------------------------------------------------------------
def argmax(a, dim=None, keepdim=False) -> Tensor:
    data = as_tensor(a).data
    if dim is None:
        out = np.asarray(np.argmax(data))
        return Tensor(out.reshape((1,) * data.ndim) if keepdim else out)
    return Tensor(np.argmax(data, axis=dim, keepdims=keepdim).astype(np.int64))


def topk(a, k: int, dim: int = -1):
    """The k largest values along `dim`, sorted descending: (values Tensor, indices int64 ndarray).
    The values carry no gradient (generation uses them as thresholds)."""
    data = as_tensor(a).data
    n = data.shape[dim]
    if not 0 < k <= n:
        raise InputError(f"topk: k={k} is out of range for a dim of size {n}")
    part = np.argpartition(-data, k - 1, axis=dim)
    idx = np.take(part, np.arange(k), axis=dim)
    vals = np.take_along_axis(data, idx, axis=dim)
    order = np.argsort(-vals, axis=dim, kind="stable")
    idx = np.take_along_axis(idx, order, axis=dim).astype(np.int64)
    return Tensor(np.take_along_axis(data, idx, axis=dim)), idx
