"""Checks for your own ops and models, the same ones tinygpt's test suite uses on every op.

- `gradcheck(fn, *inputs)`: gradients against float64 central differences (no PyTorch needed).
- `assert_matches_torch(fn, torch_fn, *arrays)`: forward and gradients against PyTorch, when it
  is installed (otherwise the check is skipped).
- `assert_close`, `TOLERANCES`, `tolerance`, `ulps`: the comparison and the bounds behind both.
- `tinygpt.testing.strategies`: Hypothesis strategies (shapes, memory layouts, value domains);
  it needs hypothesis, which only that module imports.

Neither torch nor hypothesis is needed to import this package.
"""
from .compare import assert_close, describe
from .gradcheck import GradcheckError, gradcheck
from .tolerances import TOLERANCES, tolerance, ulps
from .torch_check import assert_matches_torch, to_torch, torch_index

__all__ = ["gradcheck", "GradcheckError", "assert_matches_torch", "assert_close", "describe",
           "TOLERANCES", "tolerance", "ulps", "to_torch", "torch_index"]
