"""`Tensor`: an ndarray plus the bookkeeping reverse-mode autograd needs, and creation functions.

The differentiable ops live in `tinygpt.ops`; this module binds them as methods at its bottom
(the only import cycle in the package: ops need `Tensor`, `Tensor` methods need ops).
"""
import numpy as np

from . import autograd
from .dtypes import DEFAULT_FLOAT, as_array, is_float
from .random import generator
from ..errors import InputError


class Tensor:
    __array_priority__ = 1000  # make `ndarray + Tensor` call Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = data if isinstance(data, np.ndarray) and dtype is None else as_array(data, dtype)
        if not isinstance(self.data, np.ndarray):
            self.data = np.asarray(self.data)
        if requires_grad and not is_float(self.data.dtype):
            raise TypeError(f"only float32/float64 tensors can require gradients, got {self.data.dtype}")
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
            raise TypeError(f"only float tensors can require gradients, got {self.dtype}")
        self.requires_grad = bool(flag)
        return self

    def to(self, dtype) -> "Tensor":
        from ..ops.elementwise import Cast
        dtype = np.dtype(dtype)
        return self if dtype == self.dtype else Cast.apply(self, dtype=dtype)

    def float(self) -> "Tensor":
        return self.to(np.float32)

    def double(self) -> "Tensor":
        return self.to(np.float64)

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
def _shape(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def _float_dtype(dtype):
    return DEFAULT_FLOAT if dtype is None else np.dtype(dtype)


def tensor(data, dtype=None, requires_grad: bool = False) -> Tensor:
    if isinstance(data, Tensor):
        data = data.data
    return Tensor(np.array(as_array(data, dtype)), requires_grad=requires_grad)


def zeros(*shape, dtype=None, requires_grad=False) -> Tensor:
    return Tensor(np.zeros(_shape(shape), _float_dtype(dtype)), requires_grad=requires_grad)


def ones(*shape, dtype=None, requires_grad=False) -> Tensor:
    return Tensor(np.ones(_shape(shape), _float_dtype(dtype)), requires_grad=requires_grad)


def randn(*shape, dtype=None, requires_grad=False) -> Tensor:
    data = generator().standard_normal(_shape(shape), dtype=_float_dtype(dtype))
    return Tensor(data, requires_grad=requires_grad)


def rand(*shape, dtype=None, requires_grad=False) -> Tensor:
    data = generator().random(_shape(shape), dtype=_float_dtype(dtype))
    return Tensor(data, requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None) -> Tensor:
    if end is None:
        start, end = 0, start
    return Tensor(np.arange(start, end, step, dtype=np.int64 if dtype is None else dtype))



# --- methods: bound here because the ops import Tensor (the package's one import cycle) ----
def _bind_methods():
    import operator

    from .. import ops
    from ..ops import elementwise as ew

    def binary(fn, reverse=False):
        if reverse:
            return lambda self, other: fn.apply(*ew.binary_operands(other, self))
        return lambda self, other: fn.apply(*ew.binary_operands(self, other))

    methods = {
        "__add__": binary(ew.Add), "__radd__": binary(ew.Add, True),
        "__sub__": binary(ew.Sub), "__rsub__": binary(ew.Sub, True),
        "__mul__": binary(ew.Mul), "__rmul__": binary(ew.Mul, True),
        "__truediv__": binary(ew.Div), "__rtruediv__": binary(ew.Div, True),
        "__pow__": lambda self, e: ops.power(self, e),
        "__rpow__": lambda self, base: ops.power(Tensor(np.asarray(base, self.dtype)), self),
        "__neg__": lambda self: ew.Neg.apply(self),
        "__matmul__": lambda self, other: ops.matmul(self, other),
        "__rmatmul__": lambda self, other: ops.matmul(other, self),
        "__getitem__": ops.getitem,
        "exp": lambda self: ew.Exp.apply(self), "log": lambda self: ew.Log.apply(self),
        "sqrt": lambda self: ew.Sqrt.apply(self), "tanh": lambda self: ew.Tanh.apply(self),
        "relu": lambda self: ew.Relu.apply(self),
        "matmul": ops.matmul, "sum": ops.sum, "mean": ops.mean, "max": ops.max, "var": ops.var,
        "argmax": ops.argmax, "reshape": ops.reshape, "view": ops.reshape, "flatten": ops.flatten,
        "transpose": ops.transpose, "permute": ops.permute, "unsqueeze": ops.unsqueeze,
        "squeeze": ops.squeeze, "contiguous": ops.contiguous, "masked_fill": ops.masked_fill,
        "softmax": ops.softmax, "log_softmax": ops.log_softmax,
        "T": property(lambda self: ops.transpose(self, -1, -2) if self.ndim == 2 else self),
    }
    for name, cmp in [("__lt__", operator.lt), ("__le__", operator.le), ("__gt__", operator.gt),
                      ("__ge__", operator.ge), ("__eq__", operator.eq), ("__ne__", operator.ne)]:
        methods[name] = (lambda c: lambda self, other: ew.compare(c, self, other))(cmp)
    for name, fn in methods.items():
        setattr(Tensor, name, fn)
    Tensor.__hash__ = object.__hash__  # __eq__ is elementwise, identity stays hashable


_bind_methods()
