"""Every op really is checked: each `Function` subclass in tinygpt has a PyTorch check and a
finite-difference gradient check, so the README's "checks every op, every gradient" stays true.

The test imports every module of tinygpt and collects every subclass of
`tinygpt.core.autograd.Function` (subclasses of subclasses too). Each must have an entry in
CASES: small inputs, the public call that reaches the op, and the same computation in PyTorch.
Each case runs through `check_op` in float32 and float64 (forward, then every gradient under a
random cotangent) and through `fd_check` (float64 central differences), and the recorded graph
must contain the Function the case is filed under, so a case cannot quietly miss its op. The
op-by-op property tests (test_ops_*.py, test_functional*.py) cover each op over many shapes,
dtypes and memory layouts; this table is the floor a new Function cannot slip under.

A new Function fails test_every_function_has_a_case until it gets an entry here. (A Function
without a gradient would need a forward-only entry with its reason; tinygpt has none today.)
"""
import importlib
import math
import pkgutil
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tinygpt as tg
import tinygpt.nn.functional as F
from helpers import check_op, fd_check, functions_in_graph, torch_index
from modern_models import EVERY_OP_ROPE, torch_rope
from strategies import fixed_array
from tinygpt.core.autograd import Function
from tinygpt.ops.elementwise import Cast

NOT_IMPORTED = {"tinygpt.__main__"}  # importing it runs the command line
# Function subclasses that are abstract bases (never applied themselves), each with its reason.
ABSTRACT_BASES = set()


def tinygpt_functions():
    """{class name: class} of every Function subclass defined in tinygpt."""
    for info in pkgutil.walk_packages(tg.__path__, "tinygpt."):
        if info.name not in NOT_IMPORTED:
            importlib.import_module(info.name)
    found, stack = set(), [Function]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                stack.append(sub)
    found = sorted((c for c in found if c.__module__.startswith("tinygpt.")),
                   key=lambda c: f"{c.__module__}.{c.__qualname__}")
    by_name = {c.__name__: c for c in found}
    assert len(by_name) == len(found), f"two Functions share a name: {[c.__qualname__ for c in found]}"
    return {name: c for name, c in by_name.items() if name not in ABSTRACT_BASES}


@dataclass
class Case:
    inputs: Callable  # dtype -> list of inputs (float ndarrays get gradients; others are passed as is)
    tinygpt: Callable
    torch: Callable
    fd: Optional[Callable] = None  # the call for fd_check when it cannot be `tinygpt` (Cast)


def same(make_inputs, fn):
    """A case whose call reads the same in tinygpt and in torch (operators, Tensor methods)."""
    return Case(make_inputs, fn, fn)


def arr(*shape, domain="real", seed=0):
    return lambda dtype: fixed_array(shape, dtype, domain, seed)


def inputs(*makers):
    return lambda dtype: [m(dtype) if callable(m) else m for m in makers]


def dropout_mask(shape, dtype, p, seed):
    """The keep mask tinygpt's dropout draws after manual_seed(seed) (both kernel backends hash
    positions the same way), as a torch tensor for the reference computation."""
    tg.manual_seed(seed)
    kept = F.dropout(tg.Tensor(np.ones(shape, dtype)), p=p, training=True).data != 0
    return torch.from_numpy(kept.astype(dtype))


def seeded(seed, fn):
    """fn with the generator reset first: each evaluation (fd_check makes several) draws the same mask."""
    def call(*args):
        tg.manual_seed(seed)
        return fn(*args)
    return call


def torch_causal_softmax(s, scale):
    tq, tk = s.shape[-2:]
    masked = torch.triu(torch.ones(tq, tk, dtype=torch.bool), diagonal=tk - tq + 1)
    return (scale * s).masked_fill(masked, float("-inf")).softmax(-1)


def torch_causal_attention(q, k, v):
    """The composed computation with G = 2 key/value heads repeated for 4 query heads."""
    k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    return torch_causal_softmax(q @ k.transpose(-1, -2), 1 / math.sqrt(q.shape[-1])) @ v


def torch_causal_attention_dropped(q, k, v, p, seed):
    """As torch_causal_attention, with the (b, H, T, L) weights dropped as tinygpt drops them."""
    k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    weights = torch_causal_softmax(q @ k.transpose(-1, -2), 1 / math.sqrt(q.shape[-1]))
    return (weights * dropout_mask(weights.shape, NUMPY_DTYPE[q.dtype], p, seed) / (1 - p)) @ v


def other_float(dtype):
    return np.float32 if dtype == np.float64 else np.float64


NUMPY_DTYPE = {torch.float32: np.float32, torch.float64: np.float64}
TORCH_OTHER_FLOAT = {torch.float32: torch.float64, torch.float64: torch.float32}
COND = (np.arange(12).reshape(3, 4) % 3 == 0)
IDX = np.array([[0, 2, 2], [4, 1, 0]])
TARGETS = np.array([1, 0, 3, 3, 2])
SCALE = 1 / math.sqrt(8)

CASES = {
    # elementwise (tinygpt/ops/elementwise.py); the (2, 3, 4) op (4,) pairs broadcast
    "Add": same(inputs(arr(2, 3, 4), arr(4, seed=1)), lambda a, b: a + b),
    "Sub": same(inputs(arr(2, 3, 4), arr(4, seed=1)), lambda a, b: a - b),
    "Mul": same(inputs(arr(2, 3, 4), arr(4, seed=1)), lambda a, b: a * b),
    "Div": same(inputs(arr(2, 3, 4), arr(4, domain="nonzero", seed=1)), lambda a, b: a / b),
    "Neg": same(inputs(arr(3, 4)), lambda a: -a),
    "Pow": same(inputs(arr(3, 4, domain="positive"), arr(3, 4, seed=1)), lambda a, b: a ** b),
    "PowScalar": same(inputs(arr(3, 4, domain="positive")), lambda a: a ** 2.5),
    "Exp": same(inputs(arr(3, 4)), lambda a: a.exp()),
    "Log": same(inputs(arr(3, 4, domain="positive")), lambda a: a.log()),
    "Sqrt": same(inputs(arr(3, 4, domain="positive")), lambda a: a.sqrt()),
    "Tanh": same(inputs(arr(3, 4)), lambda a: a.tanh()),
    "ReluFn": same(inputs(arr(3, 4, domain="off_kink")), lambda a: a.relu()),
    "Where": Case(inputs(COND, arr(3, 4), arr(4, seed=1)), tg.where, torch.where),
    "MaskedFill": same(inputs(arr(3, 4), COND), lambda a, m: a.masked_fill(m, -2.0)),
    "Triangle": Case(inputs(arr(2, 3, 5)), lambda a: tg.tril(a, 1) + tg.triu(a, -1) * 2.0,
                     lambda a: torch.tril(a, 1) + torch.triu(a, -1) * 2.0),
    # float32 <-> float64 against torch; the float64 central differences need a float64 -> float64
    # Cast, which only the Function itself makes (`.to(x.dtype)` returns x): see test_ops_dtype.py
    "Cast": Case(inputs(arr(3, 4)), lambda a: a.to(other_float(a.dtype)) * 1.5,
                 lambda a: a.to(TORCH_OTHER_FLOAT[a.dtype]) * 1.5,
                 fd=lambda a: Cast.apply(a, dtype=np.dtype(np.float64)) * a),
    # indexing
    "GetItem": Case(inputs(arr(3, 4)), lambda a: a[1:, [0, 2, 2]],
                    lambda a: a[torch_index((slice(1, None), [0, 2, 2]))]),
    "EmbeddingFn": Case(inputs(IDX, arr(5, 3)), F.embedding, TF.embedding),
    # products, activations, normalisation, loss
    "MatMul": same(inputs(arr(2, 3, 4), arr(4, 5, seed=1)), lambda a, b: a @ b),
    "LinearFn": Case(inputs(arr(2, 3, 4), arr(5, 4, seed=1), arr(5, seed=2)), F.linear, TF.linear),
    "Softmax": Case(inputs(arr(3, 4)), lambda a: F.softmax(a, dim=-1), lambda a: TF.softmax(a, dim=-1)),
    "LogSoftmax": Case(inputs(arr(3, 4)), lambda a: F.log_softmax(a, dim=0),
                       lambda a: TF.log_softmax(a, dim=0)),
    "LogSigmoid": Case(inputs(arr(3, 4)), lambda a: F.logsigmoid(a * 8.0),
                       lambda a: TF.logsigmoid(a * 8.0)),
    "ScaledCausalSoftmax": Case(inputs(arr(2, 3, 5)), lambda s: F.scaled_causal_softmax(s, SCALE),
                                lambda s: torch_causal_softmax(s, SCALE)),
    "GeluFn": Case(inputs(arr(3, 4)), F.gelu, lambda a: TF.gelu(a, approximate="tanh")),
    "LayerNormFn": Case(inputs(arr(2, 3, 5), arr(5, seed=1), arr(5, seed=2)),
                      lambda x, w, b: F.layer_norm(x, w, b, eps=1e-5),
                      lambda x, w, b: TF.layer_norm(x, (5,), w, b, eps=1e-5)),
    "DropoutFn": Case(inputs(arr(4, 6)), seeded(3, lambda a: F.dropout(a, p=0.4, training=True)),
                    lambda a: a * dropout_mask(a.shape, NUMPY_DTYPE[a.dtype], 0.4, 3) / 0.6),
    "RMSNormFn": Case(inputs(arr(2, 3, 5), arr(5, seed=1)), lambda x, w: tg.ops.rms_norm(x, w, eps=1e-6),
                    lambda x, w: TF.rms_norm(x, (5,), w, eps=1e-6)),
    "Rope": Case(inputs(arr(2, 3, 4, 8)), lambda x: tg.ops.rope(x, *tg.ops.rope_tables(**EVERY_OP_ROPE, dtype=x.dtype), offset=2),
                 lambda x: torch_rope(x, offset=2, **EVERY_OP_ROPE)),
    "Silu": Case(inputs(arr(3, 4)), tg.ops.silu, TF.silu),
    "CrossEntropy": Case(inputs(arr(5, 4), TARGETS), F.cross_entropy, TF.cross_entropy),
    # attention over a 2-token cache: queries (b, H=4, T=5, hd), keys/values (b, G=2, L=7, hd)
    "CausalAttentionFn": Case(inputs(arr(2, 4, 5, 3), arr(2, 2, 7, 3, seed=1), arr(2, 2, 7, 3, seed=2)),
                              F.causal_attention, torch_causal_attention),
    # reductions
    "Sum": same(inputs(arr(2, 3, 4)), lambda a: a.sum(dim=1)),
    "Mean": same(inputs(arr(2, 3, 4)), lambda a: a.mean(dim=(0, 2))),
    "Max": Case(inputs(arr(3, 4, domain="distinct")), lambda a: a.max(dim=1),
                lambda a: a.max(dim=1).values),
    "Var": same(inputs(arr(3, 4)), lambda a: a.var(dim=-1)),
    # shape
    "Reshape": same(inputs(arr(2, 6)), lambda a: a.reshape(3, 4)),
    "Permute": same(inputs(arr(2, 3, 4)), lambda a: a.permute(2, 0, 1)),
    "Contiguous": same(inputs(arr(3, 4)), lambda a: a.transpose(0, 1).contiguous()),
    "Cat": Case(inputs(arr(2, 3), arr(2, 2, seed=1)), lambda a, b: tg.cat([a, b], dim=1),
                lambda a, b: torch.cat([a, b], dim=1)),
}

# second cases, for Functions with another code path worth its own check: the dropout of the
# attention weights (fused in the softmax, and in the blocked attention), and PowScalar's exact
# x*x and x*x*x forms
EXTRA_CASES = {
    "ScaledCausalSoftmax": Case(inputs(arr(2, 3, 5)),
                                seeded(4, lambda s: F.scaled_causal_softmax(s, SCALE, dropout_p=0.3)),
                                lambda s: torch_causal_softmax(s, SCALE)
                                * dropout_mask(s.shape, NUMPY_DTYPE[s.dtype], 0.3, 4) / 0.7),
    "PowScalar": same(inputs(arr(3, 4)), lambda a: a ** 2 + a ** 3),
    "CausalAttentionFn": Case(inputs(arr(2, 4, 5, 3), arr(2, 2, 7, 3, seed=1), arr(2, 2, 7, 3, seed=2)),
                              seeded(4, lambda q, k, v: F.causal_attention(q, k, v, dropout_p=0.3)),
                              lambda q, k, v: torch_causal_attention_dropped(q, k, v, 0.3, 4)),
}

FUNCTIONS = tinygpt_functions()
CHECKS = [(name, case) for name, case in CASES.items()] + [(name, case) for name, case in EXTRA_CASES.items()]


def test_every_function_has_a_case():
    missing = sorted(f"{FUNCTIONS[n].__module__}.{n}" for n in set(FUNCTIONS) - set(CASES))
    assert not missing, (f"Function subclasses without a PyTorch and finite-difference check: {missing}; "
                         "add each to CASES in tests/test_every_op.py")
    stale = sorted(set(CASES) - set(FUNCTIONS)) + sorted(set(EXTRA_CASES) - set(FUNCTIONS))
    assert not stale, f"CASES names Functions that tinygpt no longer has: {stale}"


def recording(fn, graphs):
    """fn, which also adds the Function classes in its output's graph to `graphs`."""
    def call(*args):
        out = fn(*args)
        graphs.update(functions_in_graph(*(out if isinstance(out, (tuple, list)) else [out])))
        return out
    return call


@pytest.mark.parametrize("name,case", CHECKS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CHECKS)])
def test_function_against_torch_and_finite_differences(name, case):
    cls = FUNCTIONS.get(name)
    assert cls is not None, f"tinygpt has no Function named {name}"
    for dtype in (np.float32, np.float64):
        graphs = set()
        check_op(recording(case.tinygpt, graphs), case.torch, case.inputs(dtype),
                 name=f"{name} {np.dtype(dtype)}")
        applied = sorted(c.__name__ for c in graphs)
        assert cls in graphs, f"the {name} case never applied {name} (its graph: {applied})"
    graphs = set()
    fd_check(recording(case.fd or case.tinygpt, graphs), case.inputs(np.float64), name=name)
    assert cls in graphs, f"the {name} finite-difference case never applied {name}"
