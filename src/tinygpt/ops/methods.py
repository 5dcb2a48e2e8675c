"""Tensor's operators and methods, attached by `tinygpt.ops` once its ops exist (core/tensor.py
imports no op, so the import graph is one-way: core <- ops)."""
import operator

import numpy as np

from ..core.dtypes import FLOAT_DTYPES
from ..core.tensor import Tensor
from ..errors import InputTypeError
from . import activations, indexing, reduce, shape
from . import elementwise as ew
from .matmul import matmul


def attach_tensor_methods():
    """Bind the ops as Tensor methods and operators (`x + y`, `x.sum()`, `x.T` ...)."""

    def binary(fn, reverse=False, op=""):
        if reverse:
            return lambda self, other: fn.apply(*ew.binary_operands(other, self, op))
        return lambda self, other: fn.apply(*ew.binary_operands(self, other, op))

    methods = {
        "__add__": binary(ew.Add), "__radd__": binary(ew.Add, True),
        "__sub__": binary(ew.Sub, op="sub"), "__rsub__": binary(ew.Sub, True, "sub"),
        "__mul__": binary(ew.Mul), "__rmul__": binary(ew.Mul, True),
        "__truediv__": binary(ew.Div, op="div"), "__rtruediv__": binary(ew.Div, True, "div"),
        "__pow__": lambda self, e: ew.power(self, e),
        "__rpow__": lambda self, base: ew.power(Tensor(np.asarray(base, self.dtype)), self),
        "__neg__": lambda self: ew.Neg.apply(self),
        "__matmul__": lambda self, other: matmul(self, other),
        "__rmatmul__": lambda self, other: matmul(other, self),
        "__getitem__": indexing.getitem,
        "exp": lambda self: ew.Exp.apply(ew.float_operand(self)),
        "log": lambda self: ew.Log.apply(ew.float_operand(self)),
        "sqrt": lambda self: ew.Sqrt.apply(ew.float_operand(self)),
        "tanh": lambda self: ew.Tanh.apply(ew.float_operand(self)),
        "relu": lambda self: ew.Relu.apply(self),
        "matmul": matmul, "sum": reduce.sum, "mean": reduce.mean, "max": reduce.max, "var": reduce.var,
        "argmax": reduce.argmax, "reshape": shape.reshape, "view": shape.reshape, "flatten": shape.flatten,
        "transpose": shape.transpose, "permute": shape.permute, "unsqueeze": shape.unsqueeze,
        "squeeze": shape.squeeze, "contiguous": shape.contiguous, "masked_fill": ew.masked_fill,
        "softmax": activations.softmax, "log_softmax": activations.log_softmax,
        "to": _to, "float": lambda self: _to(self, np.float32), "double": lambda self: _to(self, np.float64),
        "T": property(lambda self: shape.transpose(self, -1, -2) if self.ndim == 2 else self),
    }
    for name, cmp in [("__lt__", operator.lt), ("__le__", operator.le), ("__gt__", operator.gt),
                      ("__ge__", operator.ge), ("__eq__", operator.eq), ("__ne__", operator.ne)]:
        methods[name] = (lambda c: lambda self, other: ew.compare(c, self, other))(cmp)
    for name, fn in methods.items():
        setattr(Tensor, name, fn)
    Tensor.__hash__ = object.__hash__  # __eq__ is elementwise, identity stays hashable


def _to(self, dtype) -> Tensor:
    dtype = np.dtype(dtype)
    if dtype == self.dtype:
        return self
    if dtype.kind != "f":  # an integer or bool result has no gradient (as in torch): a constant
        return Tensor(self.data.astype(dtype))
    if dtype not in FLOAT_DTYPES:
        raise InputTypeError(f".to({dtype}): tinygpt computes in float32 or float64 (its kernels "
                             f"and tolerances are written for those two)")
    return ew.Cast.apply(self, dtype=dtype)
