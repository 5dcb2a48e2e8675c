"""`Tensor`: an ndarray plus the bookkeeping reverse-mode autograd needs, and creation functions.

The differentiable ops live in `tinygpt.ops`, which imports this module and attaches the ops as
Tensor's methods and operators (`x + y`, `x.sum()`, `x.to(...)`: tinygpt/ops/methods.py). This
module imports no op, so the layers stay one-way: core <- ops.
"""
import numpy as np

from . import autograd
from .dtypes import DEFAULT_FLOAT, as_array, is_float
from . import random
from ..errors import InputError, InputTypeError


class Tensor:
    __array_priority__ = 1000  # make `ndarray + Tensor` call Tensor.__radd__
    _hooks = None  # {id: fn} once register_hook is called; the class default keeps backward's check cheap

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = data if isinstance(data, np.ndarray) and dtype is None else as_array(data, dtype)
        if not isinstance(self.data, np.ndarray):
            self.data = np.asarray(self.data)
        if requires_grad and not is_float(self.data.dtype):
            raise InputTypeError(f"only float32/float64 tensors can require gradients, got {self.data.dtype}")
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None  # the Function that produced this tensor (None for leaves)

    # --- properties -------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    is_leaf = property(lambda self: self._ctx is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self):
        if self.data.size != 1:
            raise InputError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def detach(self) -> "Tensor":
        return Tensor(self.data)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if self._ctx is not None:
            raise RuntimeError("requires_grad_ can only change leaf tensors")
        if flag and not is_float(self.dtype):
            raise InputTypeError(f"only float tensors can require gradients, got {self.dtype}")
        self.requires_grad = bool(flag)
        return self

    def register_hook(self, hook) -> "autograd.RemovableHandle":
        """Call `hook(grad)` with the gradient flowing into this tensor during each backward (a
        read-only ndarray, the whole sum over its uses); a non-None return (ndarray or Tensor of
        this shape) replaces it for the rest of the pass, and for a leaf is what reaches `.grad`.
        Returns a handle whose `.remove()` unregisters the hook."""
        if not self.requires_grad:
            raise InputError("register_hook on a tensor that does not require grad: no gradient "
                             "flows into it (call requires_grad_() on a leaf first)")
        if self._hooks is None:
            self._hooks = {}
        return autograd.RemovableHandle(self._hooks, hook)

    def backward(self, grad=None, retain_graph: bool = False) -> None:
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(was it computed under no_grad, or from frozen parameters only?)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar output, got shape "
                                   f"{self.shape}; pass grad= of that shape")
            grad = np.ones_like(self.data)
        else:
            grad = as_array(grad.data if isinstance(grad, Tensor) else grad, self.dtype)
            if grad.shape != self.shape:
                raise InputError(f"backward(grad): grad shape {grad.shape} != tensor shape {self.shape}")
        autograd.backward(self, grad, retain_graph=retain_graph)


autograd.Tensor = Tensor  # Function.apply wraps its inputs and outputs in it


def as_tensor(x, dtype=None) -> Tensor:
    """Tensors pass through; anything else becomes a constant tensor (no gradient)."""
    if isinstance(x, Tensor):
        return x
    return Tensor(x, dtype=dtype)


# --- creation ---------------------------------------------------------------------
def shape_arg(shape: tuple) -> tuple:
    """The `*shape` of `zeros(2, 3)`, `zeros((2, 3))` or `x.reshape([2, 3])` as one tuple."""
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def _float_dtype(dtype):
    return DEFAULT_FLOAT if dtype is None else np.dtype(dtype)


def tensor(data, dtype=None, requires_grad: bool = False) -> Tensor:
    if isinstance(data, Tensor):
        data = data.data
    return Tensor(np.array(as_array(data, dtype)), requires_grad=requires_grad)


def zeros(*shape, dtype=None, requires_grad=False) -> Tensor:
    return Tensor(np.zeros(shape_arg(shape), _float_dtype(dtype)), requires_grad=requires_grad)


def ones(*shape, dtype=None, requires_grad=False) -> Tensor:
    return Tensor(np.ones(shape_arg(shape), _float_dtype(dtype)), requires_grad=requires_grad)


def randn(*shape, dtype=None, requires_grad=False) -> Tensor:
    data = random.randn(shape_arg(shape), _float_dtype(dtype))  # torch.randn's values
    return Tensor(data, requires_grad=requires_grad)


def rand(*shape, dtype=None, requires_grad=False) -> Tensor:
    data = random.rand(shape_arg(shape), _float_dtype(dtype))  # torch.rand's values
    return Tensor(data, requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None) -> Tensor:
    if end is None:
        start, end = 0, start
    return Tensor(np.arange(start, end, step, dtype=np.int64 if dtype is None else dtype))
