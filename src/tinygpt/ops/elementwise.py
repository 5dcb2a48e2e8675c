"""Elementwise ops with NumPy broadcasting (book appendix A's autograd, one op at a time).

Each op's backward may return a gradient in the broadcast shape; the engine sums it back to the
input's shape (`autograd.unbroadcast`).
"""
import numpy as np

from ..core.autograd import Function
from ..core.dtypes import DEFAULT_FLOAT, FLOAT_DTYPES, is_float
from ..core.tensor import Tensor, as_tensor
from ..errors import InputError, InputTypeError


def binary_operands(a, b, op: str = ""):
    """Make both operands tensors, of the dtypes torch's promotion gives where NumPy's differs:
    a Python scalar adopts the other side's float dtype (a NumPy float64 scalar would upcast
    float32 data); an integer or bool operand meeting a float one takes the float's dtype (NumPy
    widens int64 with float32 to float64); `op` "div", true division, of integers or bools gives
    float32 (NumPy: float64); `op` "sub" refuses a bool operand, as torch does. Shapes must
    broadcast; the error names both."""
    if op == "sub" and any(np.asarray(x.data if isinstance(x, Tensor) else x).dtype == np.bool_
                           for x in (a, b)):
        raise InputTypeError("subtraction with a bool tensor is not supported (torch refuses it "
                             "too): to invert a mask use ~mask or logical_not")
    if not isinstance(a, Tensor):
        a = Tensor(np.asarray(a, dtype=_scalar_dtype(a, b)))
    if not isinstance(b, Tensor):
        b = Tensor(np.asarray(b, dtype=_scalar_dtype(b, a)))
    kinds = a.dtype.kind + b.dtype.kind
    if "f" in kinds and kinds != "ff":       # the integer or bool side takes the float's dtype
        dtype = a.dtype if kinds[0] == "f" else b.dtype
        a, b = (x if x.dtype == dtype else Tensor(x.data.astype(dtype)) for x in (a, b))
    elif op == "div" and "f" not in kinds:   # integers / integers: the default float dtype
        a, b = Tensor(a.data.astype(DEFAULT_FLOAT)), Tensor(b.data.astype(DEFAULT_FLOAT))
    if a.shape != b.shape:
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise InputError(f"shapes {a.shape} and {b.shape} cannot be broadcast together") from None
    return a, b


def _scalar_dtype(scalar, other):
    if isinstance(other, Tensor) and other.dtype.kind == "f":
        return other.dtype
    if isinstance(scalar, float):
        return np.float32
    return None


class Add(Function):
    saves_inputs = False
    def forward(self, a, b):
        return a + b

    def backward(self, g):
        return g, g


class Sub(Function):
    saves_inputs = False
    def forward(self, a, b):
        return a - b

    def backward(self, g):
        return g, (-g if self.needs_input_grad[1] else None)


class Mul(Function):
    saves_inputs = "others"  # a for b's gradient, b for a's
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return (g * self.b if self.needs_input_grad[0] else None,
                g * self.a if self.needs_input_grad[1] else None)


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        ga = g / self.b if self.needs_input_grad[0] else None
        gb = -g * self.a / (self.b * self.b) if self.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    saves_inputs = False
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class Pow(Function):
    """a ** b for a tensor exponent; `PowScalar` is the common, cheaper case."""

    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = np.power(a, b)
        return self.out

    def backward(self, g):
        ga = g * self.b * np.power(self.a, self.b - 1) if self.needs_input_grad[0] else None
        gb = g * self.out * np.log(self.a) if self.needs_input_grad[1] else None
        return ga, gb


class PowScalar(Function):
    def forward(self, a, exponent):
        self.a, self.exponent = a, exponent
        if exponent == 2:  # x*x is exact and far faster than powf (a libm call per value)
            return a * a
        if exponent == 3:
            return a * a * a
        return np.power(a, a.dtype.type(exponent))

    def backward(self, g):
        e = self.exponent
        if e == 2:
            return g * 2.0 * self.a
        if e == 3:
            return g * 3.0 * (self.a * self.a)
        return g * e * np.power(self.a, self.a.dtype.type(e - 1))


class Exp(Function):
    saves_inputs = False  # backward reads the output
    def forward(self, a):
        self.out = np.exp(a)
        return self.out

    def backward(self, g):
        return g * self.out


class Log(Function):
    def forward(self, a):
        self.a = a
        return np.log(a)

    def backward(self, g):
        return g / self.a


class Sqrt(Function):
    saves_inputs = False  # backward reads the output
    def forward(self, a):
        self.out = np.sqrt(a)
        return self.out

    def backward(self, g):
        return g / (2.0 * self.out)


class Tanh(Function):
    saves_inputs = False  # backward reads the output
    def forward(self, a):
        self.out = np.tanh(a)
        return self.out

    def backward(self, g):
        return g * (1.0 - self.out * self.out)


class ReluFn(Function):
    saves_inputs = False  # backward reads a mask it made
    def forward(self, a):
        self.positive = a > 0
        return np.where(self.positive, a, a.dtype.type(0))

    def backward(self, g):
        return np.where(self.positive, g, g.dtype.type(0))


class Where(Function):
    """where(cond, a, b); `cond` is a constant bool array, gradients flow to a and b."""
    saves_inputs = False

    def forward(self, a, b, cond):
        self.cond = cond
        return np.where(cond, a, b)

    def backward(self, g):
        zero = g.dtype.type(0)
        return (np.where(self.cond, g, zero) if self.needs_input_grad[0] else None,
                np.where(self.cond, zero, g) if self.needs_input_grad[1] else None)


class MaskedFill(Function):
    saves_inputs = False
    def forward(self, a, mask, value):
        self.mask = mask
        return np.where(mask, a.dtype.type(value), a)

    def backward(self, g):
        return np.where(self.mask, g.dtype.type(0), g)


class Triangle(Function):
    """tril/triu of the last two dims; the gradient keeps the same triangle."""
    saves_inputs = False

    def forward(self, a, lower, diagonal):
        self.lower, self.diagonal = lower, diagonal
        return np.tril(a, diagonal) if lower else np.triu(a, diagonal)

    def backward(self, g):
        return np.tril(g, self.diagonal) if self.lower else np.triu(g, self.diagonal)


# --- functional forms ------------------------------------------------------------------
def _bool_mask(mask, what):
    mask = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
    if mask.dtype != np.bool_:
        raise InputTypeError(f"{what} must be a bool array, got dtype {mask.dtype}")
    return mask


def where(cond, a, b) -> Tensor:
    cond = _bool_mask(cond, "where(cond, ...): cond")
    a, b = binary_operands(a, b)
    try:
        np.broadcast_shapes(cond.shape, a.shape, b.shape)
    except ValueError:
        raise InputError(f"where: cond shape {cond.shape} does not broadcast with "
                         f"{a.shape} and {b.shape}") from None
    return Where.apply(a, b, cond=cond)


def masked_fill(a, mask, value) -> Tensor:
    mask = _bool_mask(mask, "masked_fill mask")
    a = as_tensor(a)
    try:
        if np.broadcast_shapes(mask.shape, a.shape) != a.shape:
            raise ValueError
    except ValueError:
        raise InputError(f"masked_fill: mask shape {mask.shape} does not broadcast to "
                         f"tensor shape {a.shape}") from None
    return MaskedFill.apply(a, mask=mask, value=float(value))


def _matrices(x, name) -> Tensor:
    x = as_tensor(x)
    if x.ndim < 2:  # NumPy would broadcast a vector to a matrix; torch refuses, and so do we
        raise InputError(f"{name} needs a tensor of at least 2 dims, got shape {x.shape}")
    return x


def tril(x, diagonal: int = 0) -> Tensor:
    return Triangle.apply(_matrices(x, "tril"), lower=True, diagonal=diagonal)


def triu(x, diagonal: int = 0) -> Tensor:
    return Triangle.apply(_matrices(x, "triu"), lower=False, diagonal=diagonal)


def power(a, b) -> Tensor:
    if isinstance(b, (int, float)) and isinstance(a, Tensor):
        return PowScalar.apply(a, exponent=b)
    return Pow.apply(*binary_operands(a, b))


def compare(op, a, b) -> Tensor:
    """Comparisons give bool tensors with no gradient."""
    a, b = binary_operands(a, b)
    return Tensor(op(a.data, b.data))


def float_operand(a: Tensor) -> Tensor:
    """exp, log, tanh and sqrt of an integer or bool tensor work on it as float32 (the default
    float), as torch.exp etc. promote them; such a tensor has no gradient to carry."""
    return a if is_float(a.dtype) else Tensor(a.data.astype(DEFAULT_FLOAT))


class Cast(Function):
    saves_inputs = False
    def forward(self, a, dtype):
        self.in_dtype = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return g.astype(self.in_dtype)


def cast(a: Tensor, dtype) -> Tensor:
    """`x.to(dtype)`: the same tensor if already of that dtype; a float result keeps the graph."""
    dtype = np.dtype(dtype)
    if dtype == a.dtype:
        return a
    if dtype.kind != "f":  # an integer or bool result has no gradient (as in torch): a constant
        return Tensor(a.data.astype(dtype))
    if dtype not in FLOAT_DTYPES:
        raise InputTypeError(f".to({dtype}): tinygpt computes in float32 or float64 (its kernels "
                             f"and tolerances are written for those two)")
    return Cast.apply(a, dtype=dtype)
