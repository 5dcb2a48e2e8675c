"""Hypothesis strategies for property-testing ops: shapes, dtypes, layouts, value domains, indices.

tinygpt's own op tests use these; hypothesis is optional (`pip install hypothesis`), so only this
module needs it. Three lines test an op of your own over shapes and memory layouts:

    @given(strategies.float64_arrays())
    def test_softplus(x):
        gradcheck(softplus, x)

The main idea (minitorch's permuted `tensor_data`): an op must give the same answer whatever
the memory layout of its input, so `arrays()` hands out the same logical array as a
C-contiguous array, a Fortran array, a transposed view, a step-sliced (or reversed) view of a
bigger buffer, or a read-only broadcast view with zero strides. Bugs that assume
`arr.strides` match `arr.shape` (kernels reading `.ctypes`, reshapes that forget to copy,
in-place writes into an input) show up as wrong values or errors.

Values come from a NumPy generator seeded by a drawn integer: generic values keep gradient
checks away from accidental ties and zeros, while Hypothesis spends its effort on shapes and
layouts. Domains shift the values off the places where an op or its derivative is undefined
or kinked (log/sqrt near 0, relu at 0, ties for max, division by ~0).
"""
import math

import numpy as np

from ..errors import InputError, MissingDependencyError

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as err:  # the optional extra: the rest of tinygpt.testing works without it
    raise MissingDependencyError("tinygpt.testing.strategies needs hypothesis, which is not installed: "
                                 "pip install hypothesis") from err

__all__ = ["DTYPES", "LAYOUTS", "shapes", "broadcast_shapes", "dtypes", "reduce_dims", "normalize_dims",
           "reshape_targets", "attention_shapes", "fixed_array", "arrays", "array_and_dtype",
           "float64_arrays", "broadcastable_pairs", "bool_masks", "index_arrays", "indices",
           "broadcastable_to"]

DTYPES = (np.float32, np.float64)
LAYOUTS = ("contiguous", "fortran", "transposed", "strided", "broadcast")

# ---------------------------------------------------------------------------------------------
# shapes


def shapes(min_dims=0, max_dims=4, min_side=1, max_side=4):
    """Shapes of 0-4 dims; size-1 dims come up often (min_side=0 allows empty arrays)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcast_shapes(num=2, min_dims=0, max_dims=4, min_side=1, max_side=4):
    """A tuple of `num` shapes that broadcast together (size-1 and missing leading dims;
    min_side=0 adds empty dims, which broadcast only against 0 or 1)."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=num, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    ).map(lambda b: b.input_shapes)


def dtypes():
    return st.sampled_from(DTYPES)


@st.composite
def reduce_dims(draw, ndim, allow_none=True):
    """`dim` for a reduction over an `ndim`-d array: None, an int (maybe negative) or a tuple."""
    if ndim == 0:
        return None
    kind = draw(st.sampled_from(["none", "int", "tuple"] if allow_none else ["int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


def normalize_dims(dim, ndim):
    """The set of non-negative axes a `dim` argument reduces."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else dim
    return tuple(sorted(d % ndim for d in dims))


@st.composite
def reshape_targets(draw, shape):
    """A shape with the same number of elements as `shape`, sometimes with one -1."""
    n = math.prod(shape)
    if n == 0:
        k = draw(st.integers(1, 4))
        out = draw(st.lists(st.integers(1, 3), min_size=k, max_size=k))
        out[draw(st.integers(0, k - 1))] = 0
        return tuple(out)
    factors, m, p = [], n, 2
    while m > 1:  # prime factors of n
        while m % p == 0:
            factors.append(p)
            m //= p
        p += 1
    k = draw(st.integers(1 if n > 1 else 0, 4))
    if k == 0:
        return ()
    out = [1] * k
    for f in factors:
        out[draw(st.integers(0, k - 1))] *= f
    if draw(st.booleans()):
        out[draw(st.integers(0, k - 1))] = -1
    return tuple(out)


@st.composite
def attention_shapes(draw):
    """(lead, Tq, Tk) for scores of shape (*lead, Tq, Tk), Tk >= Tq (a KV cache makes Tk > Tq)."""
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    tq = draw(st.integers(1, 6))
    tk = tq + draw(st.integers(0, 4))
    return tuple(lead), tq, tk


# ---------------------------------------------------------------------------------------------
# values


def _values(rng, shape, domain, bound):
    """float64 values of `shape` in `domain` (see module docstring)."""
    n = math.prod(shape)
    if domain == "distinct":  # all different, gaps >= 0.2, so max/argmax/topk have no ties
        v = (rng.permutation(n) - n / 2) * 0.25 + rng.uniform(0.0, 0.05, n)
        return v.reshape(shape)
    u = rng.uniform(-1.0, 1.0, shape)
    if domain == "real":  # [-bound, bound]
        return bound * u
    if domain == "positive":  # [0.5, 0.5 + bound]: log, sqrt, pow bases
        return 0.5 + bound * np.abs(u)
    if domain == "nonzero":  # |x| in [0.5, 0.5 + bound]: denominators
        return np.where(u >= 0, 1.0, -1.0) * (0.5 + bound * np.abs(u))
    if domain == "off_kink":  # |x| in [0.1, 0.1 + bound]: relu
        return np.where(u >= 0, 1.0, -1.0) * (0.1 + bound * np.abs(u))
    raise InputError(f"unknown value domain {domain!r}: real, positive, nonzero, off_kink or distinct")


def fixed_array(shape, dtype, domain="real", seed=0, bound=2.0):
    """A C-contiguous array of `domain` values from a seeded generator, for hand-written cases."""
    return np.asarray(_values(np.random.default_rng(seed), tuple(shape), domain, bound), dtype=dtype)


def _layout(draw, shape, make):
    """Build an array of `shape` with a drawn memory layout; `make(base_shape)` fills a base."""
    ndim = len(shape)
    kind = draw(st.sampled_from(LAYOUTS))
    if ndim == 0 or kind == "contiguous":
        return make(shape)
    if kind == "fortran":
        return np.asfortranarray(make(shape))
    if kind == "transposed":
        if ndim < 2:
            return make(shape)[::-1][::-1]  # still a view, contiguous strides
        perm = draw(st.permutations(range(ndim)))
        base = make(tuple(shape[p] for p in perm))
        return base.transpose(np.argsort(perm))
    if kind == "strided":  # a step slice (maybe reversed, maybe offset) of a bigger buffer
        steps = [draw(st.sampled_from([1, 2, 3, -1, -2])) for _ in shape]
        offsets = [draw(st.integers(0, 2)) if s > 0 else 0 for s in steps]
        base = make(tuple(o + n * abs(s) for n, s, o in zip(shape, steps, offsets)))
        view = base[tuple(slice(o if s > 0 else None, None, s) for s, o in zip(steps, offsets))]
        return view
    if kind == "broadcast":  # zero strides along some axes; read-only
        axes = draw(st.lists(st.booleans(), min_size=ndim, max_size=ndim))
        base = make(tuple(1 if a else n for n, a in zip(shape, axes)))
        return np.broadcast_to(base, shape)
    raise AssertionError(kind)


@st.composite
def arrays(draw, shape, dtype, domain="real", bound=2.0, layout=True):
    """A float array of `shape`/`dtype` with values in `domain`, in a drawn memory layout."""
    shape = tuple(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = np.dtype(dtype)

    def make(base_shape):  # np.asarray: 0-d arithmetic returns NumPy scalars, not arrays
        return np.asarray(_values(rng, base_shape, domain, bound), dtype=dtype)

    if not layout:
        return make(shape)
    if domain == "distinct":  # a broadcast view would repeat values; draw until it is not one
        for _ in range(10):
            arr = _layout(draw, shape, make)
            if arr.size == 0 or np.unique(arr).size == arr.size:
                return arr
        return make(shape)
    return _layout(draw, shape, make)


@st.composite
def array_and_dtype(draw, shape_strategy=None, domain="real", bound=2.0):
    """(array, dtype) with the shape drawn from `shape_strategy` (default: `shapes()`)."""
    dtype = draw(dtypes())
    shape = draw(shape_strategy if shape_strategy is not None else shapes())
    return draw(arrays(shape, dtype, domain=domain, bound=bound))


@st.composite
def float64_arrays(draw, shape_strategy=None, domain="real", bound=2.0):
    """A float64 array of a drawn shape (default `shapes()`) and memory layout: gradcheck's input."""
    shape = draw(shape_strategy if shape_strategy is not None else shapes())
    return draw(arrays(shape, np.float64, domain=domain, bound=bound))


@st.composite
def broadcastable_pairs(draw, dtype=None, domains=("real", "real"), bound=2.0, min_side=1):
    """Two arrays of one dtype (drawn unless given) whose shapes broadcast together, each in a
    drawn memory layout: the inputs of a binary elementwise op."""
    dtype = draw(dtypes()) if dtype is None else dtype
    shape_a, shape_b = draw(broadcast_shapes(2, min_side=min_side))
    return (draw(arrays(shape_a, dtype, domain=domains[0], bound=bound)),
            draw(arrays(shape_b, dtype, domain=domains[1], bound=bound)))


@st.composite
def bool_masks(draw, shape):
    """A boolean array of `shape` (any mix of True/False, maybe a non-contiguous view)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    return _layout(draw, tuple(shape), lambda s: np.asarray(rng.random(s) < p))


def index_arrays(n, shape, allow_negative=True):
    """An int64 array of `shape` with valid indices into an axis of length n (repeats likely)."""
    lo = -n if allow_negative else 0
    return hnp.arrays(np.int64, shape, elements=st.integers(lo, n - 1))


# ---------------------------------------------------------------------------------------------
# __getitem__ indices


@st.composite
def indices(draw, shape, allow_array=True, allow_neg_step=False):
    """An index for `x[idx]` with ints, slices (empty ones too), None, Ellipsis and at most one
    integer array / list. Ints are never mixed with an array: NumPy moves the advanced axes to
    the front when an int and an array are separated by a slice, PyTorch applies the int first,
    so such mixes have no single right answer."""
    ndim = len(shape)
    k = draw(st.integers(0, ndim))
    from_end = k < ndim and draw(st.booleans())
    dims = shape[ndim - k:] if from_end else shape[:k]
    use_array = allow_array and k > 0 and draw(st.booleans())
    array_at = draw(st.integers(0, k - 1)) if use_array else -1
    items = []
    for i, n in enumerate(dims):
        if i == array_at:
            if n == 0:
                items.append(np.zeros((0,), np.int64))
                continue
            ishape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
            arr = draw(index_arrays(n, ishape))
            if arr.ndim == 1 and arr.size > 0 and draw(st.booleans()):
                items.append([int(v) for v in arr])  # a plain Python list
            else:
                items.append(arr)
            continue
        kinds = ["slice"] + (["int"] if n > 0 and not use_array else [])
        if draw(st.sampled_from(kinds)) == "int":
            items.append(draw(st.integers(-n, n - 1)))
        else:
            start = draw(st.none() | st.integers(-n - 1, n + 1))
            stop = draw(st.none() | st.integers(-n - 1, n + 1))
            steps = [None, 1, 2, 3] + ([-1, -2] if allow_neg_step else [])
            items.append(slice(start, stop, draw(st.sampled_from(steps))))
    for _ in range(draw(st.integers(0, 2))):  # new axes
        items.insert(draw(st.integers(0, len(items))), None)
    if from_end or (k > 0 and draw(st.booleans())):
        items.insert(0 if from_end else len(items), Ellipsis)
    if len(items) == 1 and draw(st.booleans()):
        return items[0]
    return tuple(items)


@st.composite
def broadcastable_to(draw, shape):
    """A shape that broadcasts to `shape` without growing it (masks, conditions)."""
    k = draw(st.integers(0, len(shape)))
    tail = shape[len(shape) - k:]
    return tuple(1 if draw(st.booleans()) else n for n in tail)
