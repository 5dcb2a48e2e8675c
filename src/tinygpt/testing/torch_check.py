"""`assert_matches_torch`: an op's forward and gradients against PyTorch on the same arrays.

Run `fn` in tinygpt and `torch_fn` in PyTorch on the same NumPy inputs; compare the output's
shape, then dtype, then values; backpropagate a random cotangent (all-ones would hide a backward
that ignores or mishandles its incoming gradient) through both and compare every float input's
gradient.

tinygpt never imports PyTorch (a test and bench dependency, not a runtime one): the comparison
uses the torch module the caller has already imported to write `torch_fn`, found in sys.modules.
Without it the check raises unittest.SkipTest, which pytest reports as a skip, saying to import
torch first (or install it).
"""
import sys
import unittest

import numpy as np

from ..core.tensor import Tensor
from .compare import assert_close, check, describe
from .tolerances import TOLERANCES


def _torch():
    """The torch module this process has imported (see the module docstring)."""
    torch = sys.modules.get("torch")
    if torch is None:
        raise unittest.SkipTest("assert_matches_torch compares with PyTorch, which this process "
                                "has not imported: `import torch` before the check (pip install "
                                "torch if it is missing); the check was skipped")
    return torch


def to_torch(x):
    """A torch tensor with a C-contiguous copy of x (torch cannot wrap negative strides)."""
    return _torch().from_numpy(np.array(x, order="C", copy=True))


def torch_index(idx):
    """An index for torch: integer arrays and lists become int64 tensors."""
    torch = _torch()

    def conv(i):
        if isinstance(i, (np.ndarray, list)):
            return torch.from_numpy(np.array(i, dtype=np.int64))
        return i
    return tuple(conv(i) for i in idx) if isinstance(idx, tuple) else conv(idx)


def _np(x):
    """ndarray of a tinygpt Tensor, a torch tensor, or anything array-like."""
    if isinstance(x, Tensor):
        return x.data
    if hasattr(x, "detach"):
        return x.detach().numpy()
    return np.asarray(x)


def _bound(dtype, rtol, atol, factor):
    table = TOLERANCES["op"][np.dtype(dtype)]
    return {"rtol": (table["rtol"] if rtol is None else rtol) * factor,
            "atol": (table["atol"] if atol is None else atol) * factor}


def _wrap(inputs, floats, wrt, forward_only, ref64):
    tg_in, t_in = [], []
    for i, x in enumerate(inputs):
        if i in floats:
            need = (not forward_only) and i in wrt
            tg_in.append(Tensor(x, requires_grad=need))
            t_in.append(to_torch(x.astype(np.float64) if ref64 else x).requires_grad_(need))
        elif isinstance(x, np.ndarray):  # bool masks, int64 indices: raw for tinygpt, tensors for torch
            tg_in.append(x)
            t_in.append(to_torch(x))
        else:
            tg_in.append(x)
            t_in.append(x)
    return tg_in, t_in


def assert_matches_torch(fn, torch_fn, *arrays, rtol=None, atol=None, wrt=None, forward_only=False,
                         name=None, tol_factor=1.0, grad_scale=None, ref64=False, seed=0):
    """Check `fn(*tensors)` against `torch_fn(*torch_tensors)`: forward, then every gradient.

    Float ndarrays become tinygpt Tensors / torch tensors that require grad (only the positions in
    `wrt`, if given); other ndarrays (bool masks, int64 indices) go to tinygpt as raw ndarrays and
    to torch as tensors; anything else is passed as is. The op may return a tuple (compared item by
    item, forward only). Bounds default to TOLERANCES["op"] for the output's dtype; `tol_factor`
    widens them. `grad_scale` ({input position: float}) gives the magnitude of the terms a gradient
    is a cancellation of (see assert_close). `ref64` runs torch in float64 on the (exactly upcast)
    inputs and rounds its results to the op's dtype: for ops where torch's float32 kernel is the
    less accurate one. Raises AssertionError on a mismatch, unittest.SkipTest without torch.
    """
    _torch()
    name = name or getattr(fn, "__name__", "op")
    inputs = list(arrays)
    floats = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray) and x.dtype.kind == "f"]
    wrt = floats if wrt is None else list(wrt)
    saved = [np.array(x, copy=True) if isinstance(x, np.ndarray) else None for x in inputs]
    ctx = f"op {name} on " + ", ".join(describe(x) for x in inputs)
    op_dtype = inputs[floats[0]].dtype if floats else None
    tg_in, t_in = _wrap(inputs, floats, wrt, forward_only, ref64)

    tg_out, t_out = fn(*tg_in), torch_fn(*t_in)
    multi = isinstance(t_out, (tuple, list))
    tg_outs, t_outs = (list(tg_out), list(t_out)) if multi else ([tg_out], [t_out])
    check(len(tg_outs) == len(t_outs), f"{ctx}: {len(tg_outs)} outputs, expected {len(t_outs)}")
    for k, (o, r) in enumerate(zip(tg_outs, t_outs)):
        if isinstance(o, Tensor):
            check(tuple(o.shape) == o.data.shape and o.dtype == o.data.dtype,
                  f"{ctx}: Tensor.shape/dtype {o.shape}/{o.dtype} disagree with .data {o.data.shape}/{o.data.dtype}")
        expected = _np(r).astype(op_dtype) if ref64 else _np(r)
        tol = _bound(expected.dtype, rtol, atol, tol_factor) if expected.dtype.kind == "f" else None
        assert_close(_np(o), expected, what=f"{ctx}\n  forward output {k}", tol=tol)

    for i, x in enumerate(inputs):
        if saved[i] is not None:
            check(np.array_equal(x, saved[i], equal_nan=True), f"{ctx}: input {i} was modified")
    if forward_only or multi or not wrt:
        return True
    _compare_gradients(ctx, tg_out, t_out, tg_in, t_in, saved, wrt,
                       dict(rtol=rtol, atol=atol, factor=tol_factor, scale=grad_scale or {},
                            dtype=op_dtype if ref64 else _np(t_out).dtype, ref64=ref64, seed=seed))
    return True


def _compare_gradients(ctx, tg_out, t_out, tg_in, t_in, saved, wrt, opt):
    dout = np.asarray(np.random.default_rng(opt["seed"]).uniform(-1.0, 1.0, _np(t_out).shape),
                      dtype=opt["dtype"])
    if t_out.requires_grad:
        (t_out * to_torch(dout.astype(np.float64) if opt["ref64"] else dout)).sum().backward()
    if tg_out.requires_grad:
        with np.errstate(invalid="ignore"):  # an output with +-inf sums to NaN; only the gradient counts
            (tg_out * Tensor(dout)).sum().backward()
    for i in wrt:
        g, r = tg_in[i].grad, t_in[i].grad
        expected = np.zeros_like(saved[i]) if r is None else r.numpy().astype(saved[i].dtype)
        if g is None:
            check(not np.any(expected), f"{ctx}\n  grad of input {i}: None, but torch has a nonzero grad")
            continue
        check(isinstance(g, np.ndarray), f"{ctx}\n  grad of input {i} is {type(g)}, not an ndarray")
        assert_close(g, expected, what=f"{ctx}\n  grad of input {i} (random cotangent)",
                     tol=_bound(expected.dtype, opt["rtol"], opt["atol"], opt["factor"]),
                     scale=opt["scale"].get(i, 1.0))
