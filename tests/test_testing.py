"""tinygpt.testing, the public gradient checks: they import without torch and hypothesis, pass on
every op of tinygpt, and fail with a report that names the input and the coordinate on an op whose
backward is 1% off, or returns a wrong number, shape or dtype of gradients."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given

import tinygpt as tg
from test_every_op import CASES, EXTRA_CASES
from tinygpt.errors import InputTypeError, TinyGPTError
from tinygpt.testing import GradcheckError, assert_matches_torch, gradcheck
from tinygpt.testing import strategies as ts

ROOT = pathlib.Path(__file__).resolve().parents[1]


class Softplus(tg.Function):
    def forward(self, x):
        self.x = x
        return np.logaddexp(0.0, x)

    def backward(self, grad):
        return grad / (1.0 + np.exp(-self.x))


class OnePercentOff(Softplus):
    def backward(self, grad):
        return 1.01 * super().backward(grad)


class OneCoordinateOff(Softplus):
    def backward(self, grad):
        g = super().backward(grad)
        g.reshape(-1)[57] *= 1.01
        return g


class Transposed(Softplus):
    def backward(self, grad):
        return super().backward(grad).T


class TwoGradients(Softplus):
    def backward(self, grad):
        return super().backward(grad), grad


class Float32Gradient(Softplus):
    def backward(self, grad):
        return super().backward(grad).astype(np.float32)


def x34(seed=0):
    return tg.Tensor(np.random.default_rng(seed).standard_normal((3, 4)))


@pytest.mark.parametrize("name,case", list(CASES.items()) + [(f"{n} (2nd)", c) for n, c in EXTRA_CASES.items()])
def test_gradcheck_passes_on_every_op(name, case):
    assert gradcheck(case.fd or case.tinygpt, *case.inputs(np.float64), name=name) is True


def test_gradcheck_passes_on_a_correct_function_and_module():
    assert gradcheck(Softplus.apply, x34())
    lin = tg.nn.Linear(4, 2).to(np.float64)
    x = x34()
    assert gradcheck(lambda t: Softplus.apply(lin(t)), x, params=dict(lin.named_parameters()))
    assert lin.weight.grad is None, "gradcheck leaves the parameters' .grad as it found them"
    assert gradcheck(Softplus.apply, x, cotangent=np.ones((3, 4)), coords=[(0, 0), (2, 3)], seed=5)
    assert gradcheck(lin, x, params=dict(lin.named_parameters()), coords={0: [(1, 2)], "weight": [(1, 3)]})


class OffLinear(tg.nn.Linear):
    """A Linear whose weight gradient is wrong at one coordinate."""

    def forward(self, x):
        return x @ WrongAt13.apply(self.weight).T + self.bias


class WrongAt13(tg.Function):
    def forward(self, w):
        return w.copy()

    def backward(self, grad):
        grad = grad.copy()
        grad[1, 3] += 0.5
        return grad


def test_a_wrong_parameter_gradient_is_named():
    lin = OffLinear(4, 2).to(np.float64)
    with pytest.raises(GradcheckError, match=r"gradient of parameter weight \(shape \(2, 4\)\).*\n"
                                             r"  worst coordinate \(1, 3\)"):
        gradcheck(lin, x34(), params=dict(lin.named_parameters()))


def test_a_backward_one_percent_off_is_reported_with_its_worst_coordinate():
    with pytest.raises(GradcheckError) as err:
        gradcheck(OnePercentOff.apply, x34(), name="softplus")
    report = str(err.value)
    assert report.startswith("gradcheck softplus: the gradient of input 0 (shape (3, 4)) does not match")
    assert "12 of 12 coordinates checked are off" in report
    worst = report.split("worst coordinate ")[1]
    coord, rest = worst.split(": analytic ", 1)
    ana, num = float(rest.split(",")[0]), float(rest.split("numeric ")[1].split(",")[0])
    assert ana == pytest.approx(1.01 * num, rel=1e-6), report
    assert f"difference {abs(ana - num):.3e}" in report


def test_one_wrong_coordinate_of_a_large_input_is_found():
    x = tg.Tensor(np.random.default_rng(1).standard_normal((10, 10)))
    with pytest.raises(GradcheckError, match=r"worst coordinate \(5, 7\)"):
        gradcheck(OneCoordinateOff.apply, x, coords=[(5, 7), (0, 0)])
    with pytest.raises(GradcheckError, match=r"OneCoordinateOff.apply: .*\n  worst coordinate \(5, 7\)"):
        gradcheck(OneCoordinateOff.apply, x)  # past max_coords: the direction fails, then a search


def test_a_backward_with_wrong_count_shape_or_dtype_is_reported():
    with pytest.raises(GradcheckError, match=r"Transposed.backward returned a gradient of shape \(4, 3\) "
                                             r"for input 0 of shape \(3, 4\)"):
        gradcheck(Transposed.apply, x34())
    with pytest.raises(GradcheckError, match="TwoGradients.backward returned 2 gradients for 1 inputs"):
        gradcheck(TwoGradients.apply, x34())
    with pytest.raises(GradcheckError, match="Float32Gradient.backward returned a float32 gradient for "
                                             "input 0 of dtype float64"):
        gradcheck(Float32Gradient.apply, x34())


def test_float32_inputs_need_float64_or_upcast():
    x = tg.randn(3, 4)
    with pytest.raises(InputTypeError, match="input 0 is float32.*float64.*upcast=True"):
        gradcheck(Softplus.apply, x)
    assert gradcheck(Softplus.apply, x, upcast=True)
    assert issubclass(GradcheckError, TinyGPTError) and issubclass(GradcheckError, AssertionError)


def test_assert_matches_torch_passes_and_fails():
    import torch
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    assert assert_matches_torch(Softplus.apply, torch.nn.functional.softplus, x)
    with pytest.raises(AssertionError, match="grad of input 0"):
        assert_matches_torch(OnePercentOff.apply, torch.nn.functional.softplus, x)
    with pytest.raises(AssertionError, match="forward output 0"):
        assert_matches_torch(lambda t: Softplus.apply(t) * 1.001, torch.nn.functional.softplus, x)


@given(ts.float64_arrays())
def test_property_gradcheck_in_three_lines(x):
    gradcheck(Softplus.apply, x)


@given(ts.broadcastable_pairs(np.float64, domains=("real", "nonzero")))
def test_property_broadcastable_pairs(pair):
    a, b = pair
    np.broadcast_shapes(a.shape, b.shape)
    gradcheck(lambda s, t: s * t + s / t, a, b)


HIDDEN = """
import sys
class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "hypothesis"):
            raise ImportError(f"{name} is hidden for this test")
        return None
sys.meta_path.insert(0, _Hide())
import numpy as np, unittest
import tinygpt
assert "tinygpt.testing" not in sys.modules and "tinygpt.viz" not in sys.modules, "imported eagerly"
from tinygpt.testing import gradcheck, assert_matches_torch
assert gradcheck(lambda t: (t * t).tanh(), tinygpt.Tensor(np.linspace(-1, 1, 6)))
try:
    assert_matches_torch(lambda t: t, lambda t: t, np.ones(3))
except unittest.SkipTest as skip:
    print("skip:", skip)
try:
    import tinygpt.testing.strategies
except ImportError as err:
    print("strategies:", err)
import tinygpt.viz
assert "torch" not in sys.modules and "hypothesis" not in sys.modules
print("ok")
"""


def test_testing_imports_without_torch_and_hypothesis():
    out = subprocess.run([sys.executable, "-c", HIDDEN], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("skip: assert_matches_torch compares with PyTorch, which this "
                               "process has not imported: `import torch` before the check")
    assert lines[1] == ("strategies: tinygpt.testing.strategies needs hypothesis, which is not "
                        "installed: pip install hypothesis")
    assert lines[-1] == "ok"


def test_the_checks_hold_under_python_O():
    script = ("import numpy as np\nfrom tinygpt.testing import assert_close\n"
              "try:\n    assert_close(np.ones(3), np.ones(4))\nexcept AssertionError as err:\n    print(err)\n")
    out = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == ": shape (3,), expected (4,)", out.stderr
