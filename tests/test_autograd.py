"""The backward pass itself: topological order with reused non-leaves, diamonds, a 10k-op
chain, no_grad, accumulation across backward calls, detach, and its errors."""
import numpy as np
import pytest
import torch

import tinygpt as tg
from helpers import assert_close, check_op


def leaf(values, dtype=np.float64):
    return tg.Tensor(np.array(values, dtype), requires_grad=True)


def test_reuse_of_a_non_leaf_toposort():
    """b = a + a; c = b + b: without a topological order b's grad is pushed before it is complete."""
    a = leaf([1.0, -2.0])
    b = a + a
    c = b + b
    c.sum().backward()
    np.testing.assert_array_equal(a.grad, [4.0, 4.0])


def test_reuse_of_a_non_leaf_torch():
    x = np.array([0.5, -1.5, 2.0])
    fn = lambda a: (lambda b: b * b + b * 3.0)(a * a)  # b used three times
    check_op(fn, fn, [x], name="b*b + 3b, b = a*a")
    fn2 = lambda a: (lambda b: (lambda c: c * b)(b + b))(a.exp())  # c depends on b, c*b reuses b
    check_op(fn2, fn2, [x], name="(b+b)*b, b = exp(a)")


def test_diamond_torch():
    x = np.array([[0.3, -0.7], [1.1, 0.2]])
    def fn(a):
        y = a * 2.0
        return y.exp() + y * 3.0 - (y * y).tanh()
    check_op(fn, fn, [x], name="diamond")


def test_deep_diamond_chain_torch():
    """Many diamonds in series: each level's two paths reconverge."""
    x = np.array([0.1, -0.2, 0.3])
    def fn(a):
        for _ in range(50):
            a = (a * 0.5 + a.tanh() * 0.5)
        return a
    check_op(fn, fn, [x], name="50 diamonds")


def test_chain_of_10k_ops_no_recursion_error():
    x = leaf([1.0, 2.0])
    y = x
    for _ in range(10_000):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_array_equal(y.data, [10_001.0, 10_002.0])
    np.testing.assert_array_equal(x.grad, [1.0, 1.0])


def test_chain_of_10k_muls_grad():
    x = leaf([1.0])
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    assert_close(x.grad, np.array([1.0001 ** 10_000]), what="10k products")


def test_no_grad_records_nothing():
    x = leaf([1.0, 2.0])
    with tg.no_grad():
        y = (x * 2.0).exp().sum()
        assert not tg.is_grad_enabled()
    assert tg.is_grad_enabled()
    assert not y.requires_grad
    assert getattr(y, "_ctx", None) is None
    z = x * 2.0  # grad mode is back on after the block
    assert z.requires_grad


def test_no_grad_restored_after_exception():
    with pytest.raises(KeyError):
        with tg.no_grad():
            raise KeyError("boom")
    assert tg.is_grad_enabled()
    assert (leaf([1.0]) * 2.0).requires_grad


def test_nothing_recorded_without_requires_grad():
    a = tg.Tensor(np.array([1.0, 2.0]))
    b = (a * 3.0 + 1.0).exp()
    assert not b.requires_grad
    assert getattr(b, "_ctx", None) is None


def test_grads_accumulate_across_backward_calls_like_torch():
    x_np = np.array([0.5, -1.0, 2.0])
    x = leaf(x_np)
    xt = torch.tensor(x_np, requires_grad=True)
    for _ in range(2):  # two forward passes, two backward passes
        (x * x).sum().backward()
        (xt * xt).sum().backward()
    assert_close(x.grad, xt.grad.numpy(), what="accumulated grad")
    np.testing.assert_allclose(x.grad, 4 * x_np)


def test_grad_only_for_inputs_that_require_it():
    a = tg.Tensor(np.array([1.0, 2.0]))
    b = leaf([3.0, 4.0])
    (a * b).sum().backward()
    assert a.grad is None
    np.testing.assert_array_equal(b.grad, [1.0, 2.0])


def test_backward_on_non_scalar_without_grad_errors():
    y = leaf([1.0, 2.0]) * 2.0
    with pytest.raises(RuntimeError):
        y.backward()


def test_backward_with_explicit_grad_on_non_scalar():
    x = leaf([1.0, 2.0, 3.0])
    y = x * x
    y.backward(np.array([1.0, 0.5, -1.0]))
    np.testing.assert_allclose(x.grad, [2.0, 2.0, -6.0])


def test_backward_of_a_scalar_defaults_to_one():
    x = leaf([[1.0, 2.0]])
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [[3.0, 3.0]])
    x0 = leaf(2.0)  # a 0-d leaf
    (x0 * x0).backward()
    assert np.asarray(x0.grad).shape == () and float(x0.grad) == 4.0


def test_backward_twice_through_the_same_graph_errors():
    x = leaf([1.0, 2.0])
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_detach():
    x = leaf([1.0, 2.0])
    y = x * 3.0
    d = y.detach()
    assert not d.requires_grad
    np.testing.assert_array_equal(d.data, y.data)
    z = (x * d).sum()  # d is a constant: dz/dx = d, and nothing flows back through y
    z.backward()
    np.testing.assert_array_equal(x.grad, [3.0, 6.0])
    assert d.grad is None


def test_leaf_grad_dtype_and_shape_follow_the_leaf():
    for dtype in (np.float32, np.float64):
        x = tg.Tensor(np.ones((2, 1, 3), dtype), requires_grad=True)
        (x * tg.Tensor(np.ones((4, 3), dtype))).sum().backward()  # broadcast (2,1,3)*(4,3)
        assert x.grad.shape == (2, 1, 3) and x.grad.dtype == dtype
        np.testing.assert_array_equal(x.grad, np.full((2, 1, 3), 4.0, dtype))


def test_leaf_used_in_two_graphs():
    x = leaf([2.0])
    y1 = x * 3.0
    y2 = x * x
    y1.sum().backward()
    y2.sum().backward()
    np.testing.assert_array_equal(x.grad, [7.0])


def test_creation_dtypes():
    assert tg.tensor([1.0, 2.0]).dtype == np.float32
    assert tg.tensor(np.array([1.0, 2.0])).dtype == np.float64
    assert tg.tensor([1.0], dtype=np.float64).dtype == np.float64
    assert tg.Tensor(np.zeros(3, np.float32)).dtype == np.float32
    assert tg.zeros(2, 3).dtype == np.float32 and tg.zeros(2, 3).shape == (2, 3)
    assert tg.ones(4, dtype=np.float64).dtype == np.float64
    assert tg.randn(2, 5).shape == (2, 5) and tg.randn(2, 5).dtype == np.float32
    assert tg.zeros(2, requires_grad=True).requires_grad
    np.testing.assert_array_equal(np.asarray(tg.arange(4).data), [0, 1, 2, 3])
    t = tg.tensor([[1.0, 2.0]])
    assert t.ndim == 2 and t.shape == (1, 2) and tg.tensor(3.5).item() == 3.5
    assert isinstance(t.numpy(), np.ndarray)


def test_manual_seed_makes_randn_reproducible():
    tg.manual_seed(3)
    a = tg.randn(4, 4).data
    tg.manual_seed(3)
    np.testing.assert_array_equal(a, tg.randn(4, 4).data)


def test_float64_zero_dim_ops_keep_float64():
    """0-d arithmetic in NumPy returns NumPy scalars, not arrays: the result must stay float64."""
    a = tg.Tensor(np.array(2.0), requires_grad=True)
    for out in (a * a, a + 1.0, -a, a.exp(), a / a, a ** 2):
        assert out.dtype == np.float64, f"{out.dtype}"
        assert isinstance(out.data, np.ndarray)
    (a * a).backward()
    assert isinstance(a.grad, np.ndarray) and a.grad.dtype == np.float64
