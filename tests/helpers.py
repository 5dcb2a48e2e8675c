"""Two independent gradient oracles for every differentiable op.

`check_op` (after tinygrad's helper_test_op): run the op in tinygpt and in PyTorch on the
same NumPy inputs; compare the output's shape, then dtype, then values; backpropagate a random
cotangent `(out * dout).sum()` through both (all-ones would hide a backward that ignores or
mishandles `grad_output`), and compare the gradient of every float input.

`fd_check` (after autograd's check_vjp): no PyTorch at all. Central finite differences in
float64 along one random direction over all inputs at once (two extra forwards, whatever the
size), plus a spot check of a few single coordinates for a readable failure.

Tolerances live in TOLERANCES below and nowhere else in the suite: every test file takes its
bounds from this one table (test_suite_rules.py fails if another module defines its own).
"""
import math

import numpy as np
import torch

import tinygpt as tg

torch.set_num_threads(1)  # tiny ops: threads only add noise on a 2-core box

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)

# The suite's one tolerance table. Each bound reads
#   |actual - expected| <= atol * scale + rtol * |expected|,  scale = max(1, max |expected|)
# (assert_close; np.testing.assert_allclose(**bound) is the same test without `scale`).
TOLERANCES = {
    # one op against PyTorch on the same inputs: a few float32 ulp apart (different but correct
    # summation orders); float64 tight enough that a wrong formula cannot hide in it
    "op": {F32: dict(rtol=1e-5, atol=1e-6), F64: dict(rtol=1e-10, atol=1e-12)},
    # a Numba kernel against its NumPy reference: fast-math reductions reassociate and the
    # polynomial exp is not libm's, hence twice "op" in float32; float64 agreement is the point
    "kernel": {F32: dict(rtol=2e-5, atol=2e-6), F64: dict(rtol=1e-10, atol=1e-12)},
    # a few optimizer steps (or a clip) against torch.optim: elementwise updates in the same
    # order as torch's, so tighter than "op"
    "optimizer": {F32: dict(rtol=2e-6, atol=2e-7), F64: dict(rtol=1e-12, atol=1e-14)},
    # a whole float32 model's logits against the transformers / book PyTorch model: layer on
    # layers of float32 rounding, judged against the largest logit (atol * scale, rtol 0)
    "model": {F32: dict(rtol=0.0, atol=1e-4)},
    # float64 central differences (fd_check): the step, the relative tolerance, and the
    # round-off allowance in units of machine epsilon times sum|out * dout| / step
    "finite_difference": {F64: dict(eps=1e-6, rtol=1e-6, roundoff=64)},
}
TOL = TOLERANCES["op"]
FD = TOLERANCES["finite_difference"][F64]


def tolerance(kind, dtype):
    """A copy of TOLERANCES[kind] for `dtype`, e.g. `assert_allclose(a, b, **tolerance("op", a.dtype))`."""
    return dict(TOLERANCES[kind][np.dtype(dtype)])


def ulps(dtype, n):
    """A bound of `n` units in the last place of `dtype` (rtol = n * eps, atol 0): for results that
    are one or two roundings away from exact, where a table entry would be far too loose."""
    return dict(rtol=n * float(np.finfo(dtype).eps), atol=0.0)


# ---------------------------------------------------------------------------------------------
# conversions


def to_torch(x):
    """A torch tensor with a C-contiguous copy of x (torch cannot wrap negative strides)."""
    return torch.from_numpy(np.array(x, order="C", copy=True))


def torch_index(idx):
    """An index for torch: integer arrays and lists become int64 tensors."""
    def conv(i):
        if isinstance(i, np.ndarray) or isinstance(i, list):
            return torch.from_numpy(np.array(i, dtype=np.int64))
        return i
    return tuple(conv(i) for i in idx) if isinstance(idx, tuple) else conv(idx)


def _np(x):
    """ndarray of a tinygpt Tensor, a torch tensor, or anything array-like."""
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    if isinstance(x, tg.Tensor):
        return x.data
    return np.asarray(x)


def describe(x):
    if isinstance(x, np.ndarray):
        layout = "C" if x.flags.c_contiguous else "F" if x.flags.f_contiguous else "view"
        return f"ndarray{x.shape} {x.dtype} strides={x.strides} {layout}"
    return repr(x)


def functions_in_graph(*outputs):
    """The set of `Function` classes recorded in the autograd graph behind `outputs` (tinygpt
    Tensors; anything else is ignored). A backward frees each node's saved arrays but keeps its
    type and parents, so this works before and after backward."""
    found, seen = set(), set()
    stack = [t for t in outputs if isinstance(t, tg.Tensor)]
    while stack:
        t = stack.pop()
        if id(t) in seen or t._ctx is None:
            continue
        seen.add(id(t))
        found.add(type(t._ctx))
        stack.extend(t._ctx.parents)
    return found


# ---------------------------------------------------------------------------------------------
# comparison


def assert_close(actual, expected, *, what="", tol=None, scale=1.0):
    """Shape, then dtype, then values (NaN and inf must sit at the same places).
    `tol` defaults to TOL[expected.dtype]; integer and bool arrays must match exactly.
    atol is relative to max(scale, max |expected|): pass the magnitude of the op's intermediate
    terms as `scale` when the result is a cancellation of larger terms."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype}, expected {expected.dtype}"
    if expected.dtype.kind not in "fc":
        bad = actual != expected
        if bad.any():
            idx = [tuple(int(i) for i in t) for t in np.argwhere(bad)[:5]]
            raise AssertionError(f"{what}: {bad.sum()} of {bad.size} differ; first at {idx}: "
                                 f"{[actual[i] for i in idx]} vs expected {[expected[i] for i in idx]}")
        return
    tol = tol or TOL[expected.dtype]
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    inf_mismatch = (np.isinf(a) | np.isinf(e)) & (a != e)
    finite = np.isfinite(a) & np.isfinite(e)
    scale = max(1.0, scale, float(np.abs(e[finite]).max()) if finite.any() else 1.0)
    with np.errstate(invalid="ignore"):  # inf - inf where both are inf: masked by `finite`
        err = np.where(finite, np.abs(a - e), 0.0)
    bound = tol["atol"] * scale + tol["rtol"] * np.abs(np.where(finite, e, 0.0))
    bad = (nan_a != nan_e) | inf_mismatch | (finite & (err > bound))
    if bad.any():
        rel = err / np.maximum(np.abs(e), 1e-300)
        idx = [tuple(int(i) for i in t) for t in np.argwhere(bad)[:5]]
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} values differ "
            f"(rtol={tol['rtol']:g}, atol={tol['atol']:g}*{scale:.3g})\n"
            f"  max abs diff {err.max():.3e}, max rel diff {rel[finite].max() if finite.any() else 0:.3e}\n"
            f"  NaN mismatches {int((nan_a != nan_e).sum())}, inf mismatches {int(inf_mismatch.sum())}\n"
            f"  first bad indices {idx}\n"
            f"  actual   {[a[i] for i in idx]}\n  expected {[e[i] for i in idx]}")


def _scaled(tol, factor):
    return {k: v * factor for k, v in tol.items()}


# ---------------------------------------------------------------------------------------------
# check_op: tinygpt vs PyTorch


def check_op(tg_fn, torch_fn, inputs, *, forward_only=False, wrt=None, name=None,
             tol_factor=1.0, grad_scale=None, ref64=False, seed=0):
    """Run `tg_fn(*tg_inputs)` and `torch_fn(*torch_inputs)` on the same `inputs`.

    Float ndarrays become tinygpt Tensors / torch tensors that require grad (only those listed
    in `wrt`, a list of positions, if given); other ndarrays (bool masks, int64 indices) are
    passed to tinygpt as raw ndarrays and to torch as tensors; anything else is passed as is.
    The op may return a tuple (compared item by item, forward only). `tol_factor` widens TOL
    for one op, and must be justified where it is used. `grad_scale` ({input position: float})
    gives the magnitude of the terms a gradient is a cancellation of (see assert_close).
    `ref64` runs torch in float64 on the (exactly upcast) same inputs and rounds its results to
    the op's dtype: for ops where torch's own float32 kernel is the less accurate one.
    """
    name = name or getattr(tg_fn, "__name__", "op")
    inputs = list(inputs)
    floats = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray) and x.dtype.kind == "f"]
    wrt = floats if wrt is None else list(wrt)
    saved = [np.array(x, copy=True) if isinstance(x, np.ndarray) else None for x in inputs]
    ctx = f"op {name} on " + ", ".join(describe(x) for x in inputs)

    op_dtype = inputs[floats[0]].dtype if floats else None
    tg_in, t_in = [], []
    for i, x in enumerate(inputs):
        if i in floats:
            need = (not forward_only) and i in wrt
            tg_in.append(tg.Tensor(x, requires_grad=need))
            t_in.append(to_torch(x.astype(np.float64) if ref64 else x).requires_grad_(need))
        elif isinstance(x, np.ndarray):
            tg_in.append(x)
            t_in.append(to_torch(x))
        else:
            tg_in.append(x)
            t_in.append(x)

    tg_out, t_out = tg_fn(*tg_in), torch_fn(*t_in)
    multi = isinstance(t_out, (tuple, list))
    tg_outs = list(tg_out) if multi else [tg_out]
    t_outs = list(t_out) if multi else [t_out]
    assert len(tg_outs) == len(t_outs), f"{ctx}: {len(tg_outs)} outputs, expected {len(t_outs)}"
    for k, (o, r) in enumerate(zip(tg_outs, t_outs)):
        if isinstance(o, tg.Tensor):
            assert tuple(o.shape) == o.data.shape and o.dtype == o.data.dtype, \
                f"{ctx}: Tensor.shape/dtype {o.shape}/{o.dtype} disagree with .data {o.data.shape}/{o.data.dtype}"
        expected = _np(r).astype(op_dtype) if ref64 else _np(r)
        tol = _scaled(TOL[expected.dtype], tol_factor) if expected.dtype.kind == "f" else None
        assert_close(_np(o), expected, what=f"{ctx}\n  forward output {k}", tol=tol)

    for i, x in enumerate(inputs):
        if saved[i] is not None:
            assert np.array_equal(x, saved[i], equal_nan=True), f"{ctx}: input {i} was modified"
    if forward_only or multi or not wrt:
        return

    dtype = op_dtype if ref64 else _np(t_out).dtype
    dout = np.asarray(np.random.default_rng(seed).uniform(-1.0, 1.0, _np(t_out).shape), dtype=dtype)
    if t_out.requires_grad:
        (t_out * to_torch(dout.astype(np.float64) if ref64 else dout)).sum().backward()
    if tg_out.requires_grad:
        with np.errstate(invalid="ignore"):  # an output with +-inf sums to NaN; only the gradient counts
            (tg_out * tg.Tensor(dout)).sum().backward()
    for i in wrt:
        g = tg_in[i].grad
        r = t_in[i].grad
        expected = np.zeros_like(saved[i]) if r is None else r.numpy().astype(saved[i].dtype)
        if g is None:
            assert not np.any(expected), f"{ctx}\n  grad of input {i}: None, but torch has a nonzero grad"
            continue
        assert isinstance(g, np.ndarray), f"{ctx}\n  grad of input {i} is {type(g)}, not an ndarray"
        assert_close(g, expected, what=f"{ctx}\n  grad of input {i} (random cotangent)",
                     tol=_scaled(TOL[expected.dtype], tol_factor), scale=(grad_scale or {}).get(i, 1.0))


# ---------------------------------------------------------------------------------------------
# fd_check: float64 central differences, no torch


def fd_check(tg_fn, inputs, *, wrt=None, name=None, n_spot=3, seed=0):
    """Check tinygpt's gradients of `tg_fn` against central differences in float64.

    With a random cotangent dout, f(x) = <tg_fn(x), dout>. Directional check: for a random unit
    direction v over all wrt-inputs, (f(x + eps v) - f(x - eps v)) / 2eps must equal
    sum_i <grad_i, v_i>. Spot check: the same along up to `n_spot` coordinate axes per input.
    """
    eps, rtol = FD["eps"], FD["rtol"]
    name = name or getattr(tg_fn, "__name__", "op")
    inputs = list(inputs)
    floats = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray) and x.dtype.kind == "f"]
    wrt = floats if wrt is None else list(wrt)
    for i in wrt:
        assert inputs[i].dtype == np.float64, f"fd_check needs float64 inputs, input {i} is {inputs[i].dtype}"
    ctx = f"fd_check {name} on " + ", ".join(describe(x) for x in inputs)
    rng = np.random.default_rng(seed)

    def wrap(arrays, grad):
        return [tg.Tensor(x, requires_grad=grad and i in wrt) if i in floats else x
                for i, x in enumerate(arrays)]

    tg_in = wrap(inputs, True)
    out = tg_fn(*tg_in)
    assert out.dtype == np.float64, f"{ctx}: output dtype {out.dtype}, expected float64"
    dout = np.asarray(rng.uniform(-1.0, 1.0, out.shape))
    if not wrt or out.data.size == 0:
        return
    (out * tg.Tensor(dout)).sum().backward()
    grads = {}
    for i in wrt:
        g = tg_in[i].grad
        grads[i] = np.zeros(inputs[i].shape) if g is None else g
        assert grads[i].shape == inputs[i].shape, f"{ctx}: grad {i} shape {grads[i].shape}"

    def f(arrays):
        with tg.no_grad():
            y = tg_fn(*wrap(arrays, False)).data
        return float(np.sum(y * dout)), float(np.sum(np.abs(y * dout)))

    def numeric(direction):
        # np.asarray: 0-d arithmetic returns NumPy scalars
        plus = [np.asarray(x + eps * direction[i]) if i in direction else x for i, x in enumerate(inputs)]
        minus = [np.asarray(x - eps * direction[i]) if i in direction else x for i, x in enumerate(inputs)]
        (fp, mp), (fm, mm) = f(plus), f(minus)
        roundoff = FD["roundoff"] * np.finfo(np.float64).eps * (max(mp, mm) / eps + grad_floor)
        return (fp - fm) / (2 * eps), roundoff

    # the autograd side rounds too: a gradient that is exactly 0 in theory (e.g. var of equal
    # values) comes out at about eps * |input| * |dout|, which no relative bound admits
    grad_floor = max(float(np.abs(inputs[i]).max(initial=0.0)) for i in wrt) + 1.0

    # directional check
    v = {i: rng.standard_normal(inputs[i].shape) for i in wrt}
    norm = math.sqrt(sum(float(np.sum(d * d)) for d in v.values()))
    if norm == 0:
        return
    v = {i: d / norm for i, d in v.items()}
    num, roundoff = numeric(v)
    ana = sum(float(np.sum(grads[i] * v[i])) for i in wrt)
    terms = sum(float(np.sum(np.abs(grads[i] * v[i]))) for i in wrt)
    bound = rtol * max(abs(ana), terms) + roundoff
    assert abs(num - ana) <= bound, (
        f"{ctx}\n  directional derivative: finite difference {num:.12g}, autograd {ana:.12g}, "
        f"diff {abs(num - ana):.3e} > bound {bound:.3e}")

    # spot check a few coordinates of each input
    for i in wrt:
        size = inputs[i].size
        if size == 0:
            continue
        gmax = float(np.abs(grads[i]).max())
        for flat in rng.choice(size, size=min(n_spot, size), replace=False):
            e = np.zeros(size)
            e[flat] = 1.0
            num, roundoff = numeric({i: e.reshape(inputs[i].shape)})
            coord = np.unravel_index(flat, inputs[i].shape)
            ana = float(grads[i][coord])
            bound = rtol * (abs(ana) + 1e-3 * gmax) + roundoff
            assert abs(num - ana) <= bound, (
                f"{ctx}\n  d/d input{i}{tuple(int(c) for c in coord)}: finite difference {num:.12g}, "
                f"autograd {ana:.12g}, diff {abs(num - ana):.3e} > bound {bound:.3e}")
