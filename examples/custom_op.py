"""Your own op in tinygpt: define it, check its gradient, see a wrong backward caught, train with it.

Softplus, log(1 + e^x), as a `tinygpt.Function`: forward and backward on NumPy arrays. `gradcheck`
compares its backward with float64 central differences (and `assert_matches_torch` with PyTorch's
softplus, when PyTorch is installed); a backward 1% off is reported with the worst coordinate.
Then a small network with softplus activations learns y = sin(3x). Runs offline in seconds.

    python examples/custom_op.py [--steps 300]
"""
import argparse
import unittest

import numpy as np

from tinygpt.argtypes import positive_int
from tinygpt import tune_malloc
import tinygpt as tg
from tinygpt import nn
from tinygpt.testing import GradcheckError, assert_matches_torch, gradcheck

try:  # optional: with PyTorch the op is also checked against torch's softplus
    import torch
except ImportError:
    torch = None


class Softplus(tg.Function):
    """y = log(1 + e^x), computed stably as logaddexp(0, x); dy/dx = sigmoid(x)."""

    def forward(self, x):
        self.x = x  # backward needs the input
        return np.logaddexp(0.0, x)

    def backward(self, grad):
        if not self.needs_input_grad[0]:
            return None
        return grad / (1.0 + np.exp(-self.x))  # plain NumPy: backward is not recorded


class SoftplusOnePercentOff(Softplus):
    """The same op with a deliberately wrong backward, to show what gradcheck reports."""

    def backward(self, grad):
        return 1.01 * super().backward(grad)


def softplus(x):
    return Softplus.apply(x)


class SoftplusLayer(nn.Module):
    def forward(self, x):
        return softplus(x)


def torch_softplus(t):
    return torch.nn.functional.softplus(t)  # only called when PyTorch is installed


def check_the_op(seed: int):
    tg.manual_seed(seed)
    x = tg.randn(4, 5, dtype=np.float64)
    gradcheck(softplus, x)
    print("gradcheck(softplus): passed")
    try:
        assert_matches_torch(softplus, torch_softplus, x.data.astype(np.float32))
        print("assert_matches_torch(softplus, torch's softplus): passed")
    except unittest.SkipTest as skipped:
        print(f"assert_matches_torch: {skipped}")
    try:
        gradcheck(SoftplusOnePercentOff.apply, x)
    except GradcheckError as report:
        print(f"a backward 1% off fails, as it should:\n{report}")
    else:
        raise SystemExit("gradcheck missed a wrong backward")


def train(steps: int, seed: int):
    tg.manual_seed(seed)
    x = np.linspace(-1.0, 1.0, 64, dtype=np.float32).reshape(-1, 1)
    y = np.sin(3.0 * x)
    model = nn.Sequential(nn.Linear(1, 32), SoftplusLayer(), nn.Linear(32, 32), SoftplusLayer(),
                          nn.Linear(32, 1))
    optimizer = tg.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.0)
    losses = []
    for step in range(steps + 1):
        loss = ((model(tg.tensor(x)) - tg.tensor(y)) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 100 == 0:
            print(f"step {step:4d}  mse {losses[-1]:.5f}")
    print(f"a softplus network fits sin(3x): mse {losses[0]:.4f} -> {losses[-1]:.4f}")
    return losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=300)
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args(argv)
    tune_malloc()  # an application's choice: see tinygpt/core/malloc.py
    check_the_op(args.seed)
    return train(args.steps, args.seed)


if __name__ == "__main__":
    main()
