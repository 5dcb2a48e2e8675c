"""The suite's gradient oracles and comparisons: thin uses of the public ones in `tinygpt.testing`
(one implementation of each, the one users check their own ops with).

`check_op` (after tinygrad's helper_test_op) is `tinygpt.testing.assert_matches_torch`: the op in
tinygpt and in PyTorch on the same NumPy inputs, forward then every gradient under a random
cotangent. `fd_check` (after autograd's check_vjp) is `tinygpt.testing.gradcheck`: float64
central differences along random directions and coordinate by coordinate, no PyTorch at all.

Tolerances live in TOLERANCES (tinygpt/testing/tolerances.py) and nowhere else in the suite: every
test file takes its bounds from this one table (test_suite_rules.py fails if another module
defines its own).
"""
import torch

import tinygpt as tg
from tinygpt.testing import TOLERANCES, assert_close, assert_matches_torch, describe, gradcheck  # noqa: F401
from tinygpt.testing import to_torch, tolerance, torch_index, ulps  # noqa: F401
from tinygpt.viz import graph_tensors

torch.set_num_threads(1)  # tiny ops: threads only add noise on a 2-core box

TOL = TOLERANCES["op"]  # {dtype: {"rtol", "atol"}}: one op against PyTorch


def functions_in_graph(*outputs):
    """The set of `Function` classes recorded in the autograd graph behind `outputs` (tinygpt
    Tensors; anything else is ignored), walked by `tinygpt.viz.graph_tensors`. A backward frees
    each node's saved arrays but keeps its type and parents, so this works before and after backward."""
    return {type(t._ctx) for out in outputs if isinstance(out, tg.Tensor)
            for t in graph_tensors(out) if t._ctx is not None}


def check_op(tg_fn, torch_fn, inputs, *, forward_only=False, wrt=None, name=None,
             tol_factor=1.0, grad_scale=None, ref64=False, seed=0):
    """`tinygpt.testing.assert_matches_torch(tg_fn, torch_fn, *inputs, ...)` with the suite's
    options; `tol_factor` widens TOLERANCES["op"] for one op and must be justified where used."""
    assert_matches_torch(tg_fn, torch_fn, *inputs, forward_only=forward_only, wrt=wrt, name=name,
                         tol_factor=tol_factor, grad_scale=grad_scale, ref64=ref64, seed=seed)


def fd_check(tg_fn, inputs, *, wrt=None, name=None, seed=0):
    """`tinygpt.testing.gradcheck(tg_fn, *inputs, ...)`: float64 central differences. The property
    tests call it on many drawn examples, so each input gets its random direction and three spot
    coordinates (max_coords=0) rather than every coordinate: a quarter less time for these files;
    test_testing.py runs gradcheck's full coordinate check over every op."""
    gradcheck(tg_fn, *inputs, wrt=wrt, name=name or getattr(tg_fn, "__name__", "op"), seed=seed,
              max_coords=0)
