"""`gradcheck`: autograd's gradients against float64 central differences, no PyTorch needed.

With a cotangent `dout` (random unless given), f(x) = <fn(x), dout> is a scalar whose gradient is
exactly what one backward pass computes (a vector-Jacobian product). For each input, f is
differentiated numerically along a random direction, (f(x + eps v) - f(x - eps v)) / 2 eps, and
compared with <grad, v>: two extra forwards per input, whatever its size. Small inputs (and any
`coords` asked for) are also checked coordinate by coordinate, so a failure names the worst one.
While the backward runs, every op's `Function.backward` is checked to return one gradient per
input, each with the input's shape (or the shape it was broadcast to) and dtype.
"""
import math
from functools import partial

import numpy as np

from ..core.autograd import no_grad
from ..core.tensor import Tensor
from ..errors import InputError, InputTypeError, TinyGPTError
from .tolerances import TOLERANCES

FD = TOLERANCES["finite_difference"][np.dtype(np.float64)]


class GradcheckError(TinyGPTError, AssertionError):
    """A gradient that does not match its finite differences, or a backward that returned the
    wrong number, shape or dtype of gradients; the message names the input and the coordinate."""


def _as_array(x):
    return x.data if isinstance(x, Tensor) else x


def _float64_inputs(inputs, wrt, upcast, name):
    arrays = [_as_array(x) for x in inputs]
    floats = [i for i, x in enumerate(arrays) if isinstance(x, np.ndarray) and x.dtype.kind == "f"]
    wrt = floats if wrt is None else list(wrt)
    for i in wrt:
        if i not in floats:
            raise InputTypeError(f"gradcheck {name}: input {i} is not a floating-point array or Tensor")
        if arrays[i].dtype != np.float64:
            if not upcast:
                raise InputTypeError(
                    f"gradcheck {name}: input {i} is {arrays[i].dtype}, but central differences need "
                    f"float64 (a step of {FD['eps']:g} is lost in float32's rounding); pass "
                    "x.to(np.float64), or gradcheck(..., upcast=True)")
            arrays[i] = arrays[i].astype(np.float64)
    return arrays, floats, wrt


def _checked(ctx):
    """ctx.backward, checked for one gradient per input with the input's shape and dtype."""
    backward, op = ctx.backward, type(ctx).__name__

    def checked_backward(grad):
        grads = backward(grad)
        grads_tuple = grads if isinstance(grads, tuple) else (grads,)
        if len(grads_tuple) != len(ctx.parents):
            raise GradcheckError(f"{op}.backward returned {len(grads_tuple)} gradients for {len(ctx.parents)} "
                                 "inputs: return one per input, None where needs_input_grad is False")
        for k, (parent, g) in enumerate(zip(ctx.parents, grads_tuple)):
            if g is None:
                if ctx.needs_input_grad[k]:
                    raise GradcheckError(f"{op}.backward returned None for input {k}, which needs a gradient")
                continue
            shape, dtype = np.shape(g), getattr(g, "dtype", None)
            try:
                fits = np.broadcast_shapes(parent.shape, shape) == shape
            except ValueError:
                fits = False
            if not fits:
                raise GradcheckError(f"{op}.backward returned a gradient of shape {shape} for input {k} "
                                     f"of shape {parent.shape}")
            if dtype != parent.dtype:
                raise GradcheckError(f"{op}.backward returned a {dtype} gradient for input {k} "
                                     f"of dtype {parent.dtype}")
        return grads
    return checked_backward


def _check_backwards(out):
    """Install the checked backward on every op of the graph behind `out` (the backward pass frees
    each op's state afterwards, which removes it again)."""
    stack, seen = [out], set()
    while stack:
        t = stack.pop()
        if id(t) in seen or t._ctx is None:
            continue
        seen.add(id(t))
        t._ctx.backward = _checked(t._ctx)
        stack.extend(t._ctx.parents)


def _targets(arrays, wrt, params):
    """[(label, array)] of everything gradcheck differentiates: the wrt inputs, then the params."""
    targets = [(f"input {i}", arrays[i]) for i in wrt]
    named = params.items() if isinstance(params, dict) else enumerate(params or ())
    for key, p in named:
        if not isinstance(p, Tensor) or p.dtype != np.float64:
            raise InputTypeError(f"gradcheck: parameter {key} must be a float64 Tensor "
                                 f"(model.to(np.float64)), got {getattr(p, 'dtype', type(p))}")
        targets.append((f"parameter {key}", p))
    return targets


class _Objective:
    """f(x) = <fn(x), dout> evaluated with one target (an input or a parameter) moved by a delta."""

    def __init__(self, fn, arrays, floats, wrt, targets, dout):
        self.fn, self.arrays, self.floats, self.wrt = fn, arrays, floats, wrt
        self.targets, self.dout = targets, dout

    def tensors(self, arrays, grad):
        return [Tensor(x, requires_grad=grad and i in self.wrt) if i in self.floats else x
                for i, x in enumerate(arrays)]

    def __call__(self, k, delta):
        base = self.targets[k][1]
        with no_grad():
            if isinstance(base, Tensor):  # a parameter: moved in place, so views of it move too
                saved = base.data.copy()
                np.add(saved, delta, out=base.data)
                try:
                    y = self.fn(*self.tensors(self.arrays, False)).data
                finally:
                    np.copyto(base.data, saved)
            else:
                moved = list(self.arrays)
                moved[self.wrt[k]] = np.asarray(base + delta)  # 0-d arithmetic gives NumPy scalars
                y = self.fn(*self.tensors(moved, False)).data
        terms = y * self.dout
        return float(np.sum(terms)), float(np.sum(np.abs(terms)))


def _name(fn):
    """`Cube.apply` for a Function's apply, the function's or the module's name otherwise."""
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type):
        return f"{owner.__name__}.{fn.__name__}"
    return getattr(fn, "__qualname__", type(fn).__name__)


def _flat_coords(coords, label, shape):
    """The flat indices `coords` asks for in target k (a list for every target, or a dict keyed
    by input position or parameter name)."""
    if isinstance(coords, dict):
        key = label.split(" ", 1)[1]
        wanted = coords.get(int(key) if key.isdigit() else key, ())
    else:
        wanted = coords
    if not shape:  # a 0-d input has one coordinate, ()
        return [0] if len(wanted) else []
    return [int(np.ravel_multi_index(tuple(np.atleast_1d(c)), shape)) for c in wanted]


def _worst_coordinate(flats, shape, g, numeric, rtol, atol):
    """(the coordinate farthest out of its bound with its analytic value, numeric value and bound,
    or None; how many coordinates are out) among the flat indices `flats` of a target."""
    gmax, worst, worst_ratio, n_bad = float(np.abs(g).max()), None, 1.0, 0
    for flat in flats:
        e = np.zeros(g.size)
        e[flat] = 1.0
        num, roundoff = numeric(e.reshape(shape))
        ana = float(g.reshape(-1)[flat])
        bound = rtol * (abs(ana) + 1e-3 * gmax) + atol + roundoff
        ratio = abs(num - ana) / bound  # bound > 0: the round-off term never is 0
        if ratio > 1.0:
            n_bad += 1
            if ratio >= worst_ratio:
                coord = tuple(int(c) for c in np.unravel_index(flat, shape))
                worst, worst_ratio = (coord, ana, num, bound), ratio
    return worst, n_bad


def _report(name, label, shape, worst, n_bad, n_checked, direction):
    lines = [f"gradcheck {name}: the gradient of {label} (shape {shape}) does not match central differences"]
    if worst is not None:
        coord, ana, num, bound = worst
        lines.append(f"  worst coordinate {coord}: analytic {ana:.10g}, numeric {num:.10g}, "
                     f"difference {abs(ana - num):.3e} (bound {bound:.3e})")
        lines.append(f"  {n_bad} of {n_checked} coordinates checked are off")
    else:
        lines.append(f"  all {n_checked} coordinates checked are within bounds; pass coords= to check others")
    ana, num, bound = direction
    lines.append(f"  along a random direction: analytic {ana:.10g}, numeric {num:.10g}, "
                 f"difference {abs(ana - num):.3e} (bound {bound:.3e})")
    return "\n".join(lines)


def gradcheck(fn, *inputs, eps=None, rtol=None, atol=0.0, cotangent=None, coords=None, seed=0,
              wrt=None, params=None, upcast=False, max_coords=32, name=None):
    """Check the gradients autograd computes for `fn(*inputs)` against float64 central differences.

    `fn` takes and returns Tensors: a Function's `apply`, a Module, any composite. Floating inputs
    (Tensors or ndarrays; all of them, or the positions in `wrt`) must be float64, or pass
    `upcast=True`; other inputs (index arrays, masks, numbers) are passed through. `params`
    (a list, or a dict such as `dict(model.named_parameters())`) are float64 tensors `fn` uses,
    whose gradients are checked too. Each input is checked along a random direction; inputs of
    up to `max_coords` elements also coordinate by coordinate, larger ones at three random
    coordinates (up to 1024 when the direction is off, to find the worst), and `coords` (index
    tuples, or {input position or parameter name: index tuples}) replaces that choice.
    `eps` and `rtol` default to TOLERANCES["finite_difference"]. Returns True, or raises
    GradcheckError; a float32 input without `upcast` raises InputTypeError.
    """
    name = name or _name(fn)
    eps = FD["eps"] if eps is None else eps
    rtol = FD["rtol"] if rtol is None else rtol
    arrays, floats, wrt = _float64_inputs(inputs, wrt, upcast, name)
    targets = _targets(arrays, wrt, params)
    rng = np.random.default_rng(seed)
    analytic, dout = _analytic(fn, name, arrays, floats, wrt, targets, cotangent, rng)
    objective = _Objective(fn, arrays, floats, wrt, targets, dout)
    # the autograd side rounds too: a gradient that is exactly 0 in theory (e.g. var of equal
    # values) comes out at about eps * |input| * |dout|, which no relative bound admits
    grad_floor = max((float(np.abs(_as_array(t)).max(initial=0.0)) for _, t in targets), default=0.0) + 1.0
    # and an output can be a small difference of large intermediates (log-softmax of a confident
    # row is ~ -1e-5 from logits ~ 10), whose rounding follows the inputs' size, not the output's
    input_scale = (grad_floor - 1.0) * float(np.sum(np.abs(dout)))

    def numeric(k, direction):
        (fp, mp), (fm, mm) = objective(k, eps * direction), objective(k, -eps * direction)
        roundoff = FD["roundoff"] * np.finfo(np.float64).eps * (max(mp, mm, input_scale) / eps
                                                                 + grad_floor)
        return (fp - fm) / (2 * eps), roundoff

    for k, (label, target) in enumerate(targets):
        shape, g = _as_array(target).shape, analytic[k]
        size = math.prod(shape)
        if size == 0:
            continue
        v = rng.standard_normal(shape)
        v /= math.sqrt(float(np.sum(v * v)))
        num, roundoff = numeric(k, v)
        ana = float(np.sum(g * v))
        bound = rtol * max(abs(ana), float(np.sum(np.abs(g * v)))) + atol + roundoff
        direction_ok = abs(num - ana) <= bound
        if coords is not None:
            flats = _flat_coords(coords, label, shape)
        elif size <= max_coords:
            flats = range(size)
        else:  # a few spot checks; when the direction already failed, up to 1024 to find the worst
            flats = rng.choice(size, size=min(3 if direction_ok else 1024, size), replace=False)
        worst, n_bad = _worst_coordinate(flats, shape, g, partial(numeric, k), rtol, atol)
        if n_bad or not direction_ok:
            raise GradcheckError(_report(name, label, shape, worst, n_bad, len(flats), (ana, num, bound)))
    return True


def _analytic(fn, name, arrays, floats, wrt, targets, cotangent, rng):
    """(gradient of every target from one checked backward pass, the cotangent used)."""
    params = [t for _, t in targets if isinstance(t, Tensor)]
    for p in params:
        if not p.requires_grad:
            raise InputError(f"gradcheck {name}: a parameter of shape {p.shape} does not require grad")
    saved_grads = [p.grad for p in params]
    tensors = [Tensor(x, requires_grad=i in wrt) if i in floats else x for i, x in enumerate(arrays)]
    try:
        for p in params:
            p.grad = None
        out = fn(*tensors)
        if not isinstance(out, Tensor):
            raise InputTypeError(f"gradcheck {name}: fn must return one Tensor, got {type(out).__name__}")
        if out.dtype != np.float64:
            raise InputTypeError(f"gradcheck {name}: fn returned {out.dtype}; with float64 inputs "
                                 "and parameters it should compute in float64")
        dout = (rng.uniform(-1.0, 1.0, out.shape) if cotangent is None
                else np.asarray(_as_array(cotangent), dtype=np.float64))
        if dout.shape != out.shape:
            raise InputError(f"gradcheck {name}: cotangent shape {dout.shape} != output shape {out.shape}")
        if out.requires_grad and out.size:
            _check_backwards(out)
            out.backward(dout)
        leaves = [tensors[i] for i in wrt] + params
        grads = []
        for (label, target), leaf in zip(targets, leaves):
            g = np.zeros(leaf.shape) if leaf.grad is None else leaf.grad
            if g.shape != leaf.shape or g.dtype != np.float64:
                raise GradcheckError(f"gradcheck {name}: the gradient of {label} has shape {g.shape} and "
                                     f"dtype {g.dtype}; expected {leaf.shape} float64")
            grads.append(np.array(g))
        return grads, dout
    finally:
        for p, g in zip(params, saved_grads):
            p.grad = g
