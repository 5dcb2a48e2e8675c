"""Shape ops: reshape/view, flatten, transpose/permute, (un)squeeze, contiguous, cat and stack.
They move no arithmetic, so each backward just undoes the forward's rearrangement."""
import numpy as np

from ..core.autograd import Function
from ..core.tensor import as_tensor, shape_arg
from ..errors import InputError


class Reshape(Function):
    saves_inputs = False
    def forward(self, a, shape):
        self.in_shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise InputError(f"cannot reshape a tensor of shape {a.shape} ({a.size} elements) "
                             f"into shape {shape}") from None

    def backward(self, g):
        return g.reshape(self.in_shape)


class Permute(Function):
    saves_inputs = False
    def forward(self, a, dims):
        self.inverse = tuple(sorted(range(len(dims)), key=dims.__getitem__))
        return a.transpose(dims)

    def backward(self, g):
        return g.transpose(self.inverse)


class Contiguous(Function):
    saves_inputs = False
    def forward(self, a):
        return np.ascontiguousarray(a)

    def backward(self, g):
        return g


class Cat(Function):
    saves_inputs = False
    def forward(self, *arrays, axis):
        self.axis = axis
        self.splits = np.cumsum([a.shape[axis] for a in arrays])[:-1]
        return np.concatenate(arrays, axis=axis)

    def backward(self, g):
        return tuple(np.split(g, self.splits, axis=self.axis))


def _axis(dim, ndim, what):
    if not -ndim <= dim < ndim:
        raise InputError(f"{what}: dim {dim} is out of range for {ndim} dims")
    return dim % ndim


def reshape(a, *shape):
    return Reshape.apply(as_tensor(a), shape=shape_arg(shape))


def flatten(a, start_dim=0, end_dim=-1):
    a = as_tensor(a)
    if a.ndim == 0:
        return reshape(a, 1)
    start, end = _axis(start_dim, a.ndim, "flatten"), _axis(end_dim, a.ndim, "flatten")
    if start > end:
        raise InputError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    merged = int(np.prod(a.shape[start:end + 1]))
    return reshape(a, a.shape[:start] + (merged,) + a.shape[end + 1:])


def permute(a, *dims):
    a = as_tensor(a)
    dims = tuple(_axis(d, a.ndim, "permute") for d in shape_arg(dims))
    if sorted(dims) != list(range(a.ndim)):
        raise InputError(f"permute: dims {dims} are not a permutation of {a.ndim} axes")
    return Permute.apply(a, dims=dims)


def transpose(a, dim0, dim1):
    a = as_tensor(a)
    dims = list(range(a.ndim))
    d0, d1 = _axis(dim0, a.ndim, "transpose"), _axis(dim1, a.ndim, "transpose")
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return Permute.apply(a, dims=tuple(dims))


def unsqueeze(a, dim):
    a = as_tensor(a)
    d = _axis(dim, a.ndim + 1, "unsqueeze")
    return reshape(a, a.shape[:d] + (1,) + a.shape[d:])


def squeeze(a, dim=None):
    a = as_tensor(a)
    if dim is None:
        return reshape(a, tuple(n for n in a.shape if n != 1))
    d = _axis(dim, max(a.ndim, 1), "squeeze")
    if a.ndim == 0 or a.shape[d] != 1:
        return a
    return reshape(a, a.shape[:d] + a.shape[d + 1:])


def contiguous(a):
    a = as_tensor(a)
    if a.data.flags.c_contiguous:
        return a
    return Contiguous.apply(a)


def cat(tensors, dim=0):
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise InputError("cat needs at least one tensor")
    ndim = tensors[0].ndim
    axis = _axis(dim, ndim, "cat")
    for t in tensors[1:]:
        if t.ndim != ndim or any(t.shape[i] != tensors[0].shape[i] for i in range(ndim) if i != axis):
            raise InputError(f"cat along dim {dim}: shapes {tensors[0].shape} and {t.shape} differ "
                             "outside that dim")
    return Cat.apply(*tensors, axis=axis)


def stack(tensors, dim=0):
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise InputError("stack needs at least one tensor")
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise InputError(f"stack: shapes {tensors[0].shape} and {t.shape} differ")
    axis = _axis(dim, tensors[0].ndim + 1, "stack")
    return cat([unsqueeze(t, axis) for t in tensors], dim=axis)
