"""`Tensor`: an ndarray plus the bookkeeping reverse-mode autograd needs, and creation functions.

Tensor's operators and methods (`x + y`, `x @ w`, `x.sum()`, `x.to(...)`) are written in its class
body, each one line that calls its op in `tinygpt.ops`, so go-to-definition lands here and one
more jump reaches the op. The ops import this module, so it imports them last, at the bottom,
once `Tensor` and the creation functions exist: whichever module Python loads first, every name
the other needs is defined by then, and a method call pays no import.
"""
import operator

import numpy as np

from . import autograd
from .dtypes import DEFAULT_FLOAT, as_array, check_kind, is_float
from .random import generator
from ..errors import InputError, InputTypeError, StateError


class Tensor:
    __array_priority__ = 1000  # make `ndarray + Tensor` call Tensor.__radd__
    _hooks = None  # {id: fn} once register_hook is called; the class default keeps backward's check cheap
    _version = 0   # bumped by every in-place change of .data (bump_version); backward compares it

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if isinstance(data, np.ndarray) and dtype is None:
            self.data = check_kind(data)
        else:
            self.data = as_array(data, dtype)
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

    def __bool__(self) -> bool:
        """`if loss < 1.0:` works on a one-element tensor; more or fewer values raise, as in torch."""
        if self.data.size != 1:
            which = "no values" if self.data.size == 0 else "more than one value"
            raise InputError(f"Boolean value of Tensor with {which} is ambiguous (shape {self.shape}): "
                             "use .any() / .all() on .numpy(), or compare one element")
        return bool(self.data)

    def bump_version(self) -> None:
        """Record that `.data` was changed in place (an optimizer step, load_state_dict): a graph
        that saved this tensor for its backward then refuses to run (autograd.ModifiedInPlaceError)
        instead of differentiating the new values."""
        self._version += 1

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
            raise StateError("requires_grad_ can only change leaf tensors")
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
            raise StateError("backward() on a tensor that does not require grad "
                             "(was it computed under no_grad, or from frozen parameters only?)")
        if grad is None:
            if self.data.size != 1:
                raise StateError(f"backward() without a gradient needs a scalar output, got shape "
                                 f"{self.shape}; pass grad= of that shape")
            grad = np.ones_like(self.data)
        else:
            grad = as_array(grad.data if isinstance(grad, Tensor) else grad, self.dtype)
            if grad.shape != self.shape:
                raise InputError(f"backward(grad): grad shape {grad.shape} != tensor shape {self.shape}")
        autograd.backward(self, grad, retain_graph=retain_graph)

    # --- operators: each calls its op (tinygpt/ops/...) --------------------------------------
    def __add__(self, other): return _ew.Add.apply(*_ew.binary_operands(self, other))
    def __radd__(self, other): return _ew.Add.apply(*_ew.binary_operands(other, self))
    def __sub__(self, other): return _ew.Sub.apply(*_ew.binary_operands(self, other, "sub"))
    def __rsub__(self, other): return _ew.Sub.apply(*_ew.binary_operands(other, self, "sub"))
    def __mul__(self, other): return _ew.Mul.apply(*_ew.binary_operands(self, other))
    def __rmul__(self, other): return _ew.Mul.apply(*_ew.binary_operands(other, self))
    def __truediv__(self, other): return _ew.Div.apply(*_ew.binary_operands(self, other, "div"))
    def __rtruediv__(self, other): return _ew.Div.apply(*_ew.binary_operands(other, self, "div"))
    def __pow__(self, exponent): return _ew.power(self, exponent)
    def __rpow__(self, base): return _ew.power(Tensor(np.asarray(base, self.dtype)), self)
    def __neg__(self): return _ew.Neg.apply(self)
    def __matmul__(self, other): return _matmul(self, other)
    def __rmatmul__(self, other): return _matmul(other, self)
    def __getitem__(self, index): return _indexing.getitem(self, index)

    # comparisons give bool tensors with no gradient; __eq__ is elementwise, so identity hashes
    def __lt__(self, other): return _ew.compare(operator.lt, self, other)
    def __le__(self, other): return _ew.compare(operator.le, self, other)
    def __gt__(self, other): return _ew.compare(operator.gt, self, other)
    def __ge__(self, other): return _ew.compare(operator.ge, self, other)
    def __eq__(self, other): return _ew.compare(operator.eq, self, other)
    def __ne__(self, other): return _ew.compare(operator.ne, self, other)
    __hash__ = object.__hash__

    # --- methods: each calls its op (tinygpt/ops/...) ----------------------------------------
    def exp(self): return _ew.Exp.apply(_ew.float_operand(self))
    def log(self): return _ew.Log.apply(_ew.float_operand(self))
    def sqrt(self): return _ew.Sqrt.apply(_ew.float_operand(self))
    def tanh(self): return _ew.Tanh.apply(_ew.float_operand(self))
    def relu(self): return _ew.ReluFn.apply(self)
    def masked_fill(self, mask, value): return _ew.masked_fill(self, mask, value)
    def matmul(self, other): return _matmul(self, other)
    def sum(self, dim=None, keepdim=False): return _reduce.sum(self, dim, keepdim)
    def mean(self, dim=None, keepdim=False): return _reduce.mean(self, dim, keepdim)
    def max(self, dim=None, keepdim=False): return _reduce.max(self, dim, keepdim)
    def var(self, dim=None, keepdim=False, unbiased=True): return _reduce.var(self, dim, keepdim, unbiased)
    def argmax(self, dim=None, keepdim=False): return _reduce.argmax(self, dim, keepdim)
    def reshape(self, *shape): return _shape.reshape(self, *shape)
    def view(self, *shape): return _shape.reshape(self, *shape)
    def flatten(self, start_dim=0, end_dim=-1): return _shape.flatten(self, start_dim, end_dim)
    def transpose(self, dim0, dim1): return _shape.transpose(self, dim0, dim1)
    def permute(self, *dims): return _shape.permute(self, *dims)
    def unsqueeze(self, dim): return _shape.unsqueeze(self, dim)
    def squeeze(self, dim=None): return _shape.squeeze(self, dim)
    def contiguous(self): return _shape.contiguous(self)
    def softmax(self, dim=-1): return _activations.softmax(self, dim)
    def log_softmax(self, dim=-1): return _activations.log_softmax(self, dim)
    def to(self, dtype): return _ew.cast(self, dtype)
    def float(self): return _ew.cast(self, np.float32)
    def double(self): return _ew.cast(self, np.float64)

    @property
    def T(self):  # noqa: N802 (torch's name): the transpose of a matrix; other ranks unchanged
        return _shape.transpose(self, -1, -2) if self.ndim == 2 else self


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
    data = generator().standard_normal(shape_arg(shape), dtype=_float_dtype(dtype))
    return Tensor(data, requires_grad=requires_grad)


def rand(*shape, dtype=None, requires_grad=False) -> Tensor:
    data = generator().random(shape_arg(shape), dtype=_float_dtype(dtype))
    return Tensor(data, requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None) -> Tensor:
    if end is None:
        start, end = 0, start
    return Tensor(np.arange(start, end, step, dtype=np.int64 if dtype is None else dtype))


# The ops import this module (for Tensor and as_tensor), so it imports them last, once every name
# above exists; the methods above look these names up when called, never at import.
from ..ops import activations as _activations, elementwise as _ew, indexing as _indexing  # noqa: E402
from ..ops import reduce as _reduce, shape as _shape  # noqa: E402
from ..ops.matmul import matmul as _matmul  # noqa: E402
