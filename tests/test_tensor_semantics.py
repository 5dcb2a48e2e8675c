"""Tensor behaviour that would mislead if it differed from PyTorch's (issue 36.7, 36.3, 36.8, 38.6):
truth values, parameters changed in place between forward and backward, LayerNorm under float32
overflow, out-of-range cross-entropy targets, and construction from data that is not numbers."""
import numpy as np
import pytest
import torch

import tinygpt as tg
from tinygpt.testing import tolerance
import tinygpt.nn.functional as F
from tinygpt import kernels, nn, optim
from tinygpt.core.autograd import ModifiedInPlaceError
from tinygpt.errors import InputError, InputIndexError, InputTypeError, TinyGPTError
from tinygpt.kernels import layernorm


# ---- bool(): one element has a truth value, any other count raises ----------------------------

@pytest.mark.parametrize("make", [
    lambda m: m.tensor(0.0), lambda m: m.tensor(2.5), lambda m: m.tensor([0.0]), lambda m: m.tensor([[3]]),
    lambda m: m.tensor(float("nan")), lambda m: m.tensor([1.0, 2.0]), lambda m: m.tensor([]),
    lambda m: m.zeros(0, 3), lambda m: m.tensor(0.5) < 1.0, lambda m: m.tensor([0.5]) > 1.0,
    lambda m: m.tensor([0.5, 2.0]) < 1.0, lambda m: m.tensor(3) == 3, lambda m: m.tensor([True]),
], ids=["0-d zero", "0-d", "1 elem zero", "1x1 int", "nan", "two", "empty", "empty 2-d", "0-d lt",
        "1 elem gt", "two lt", "int eq", "bool"])
def test_bool_matches_torch(make):
    try:
        expected = bool(make(torch))
    except RuntimeError:
        with pytest.raises(InputError, match="ambiguous"):
            bool(make(tg))
        return
    assert bool(make(tg)) is expected


def test_if_on_a_loss_takes_the_right_branch():
    loss = tg.tensor(2.0, requires_grad=True) * 0.25
    taken = "small" if loss < 1.0 else "large"
    assert taken == "small"
    with pytest.raises(InputError, match="more than one value"):
        if tg.ones(3) > 0:
            pass


# ---- a tensor saved for backward and changed in place: backward refuses, as torch does ------

def _forward(m, x, w, b):
    """A small layer in either library: linear, layer norm, mean of squares."""
    fn = F if m is tg else torch.nn.functional
    h = fn.linear(x, w, b)
    if m is tg:
        h = F.layer_norm(h, tg.ones(3, dtype=np.float64), tg.zeros(3, dtype=np.float64))
    else:
        h = fn.layer_norm(h, (3,), torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    return (h * h).mean()


def _setup(m):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((4, 5)), rng.standard_normal((3, 5)), rng.standard_normal(3)
    # x requires grad, as a hidden activation does: torch saves W only when x needs a gradient
    if m is tg:
        return tg.tensor(x, requires_grad=True), nn.Parameter(tg.tensor(w)), nn.Parameter(tg.tensor(b))
    return (torch.tensor(x, requires_grad=True), torch.nn.Parameter(torch.tensor(w)),
            torch.nn.Parameter(torch.tensor(b)))


MODIFIERS = {
    "sgd step": lambda m, w, b: (optim.SGD if m is tg else torch.optim.SGD)([w, b], lr=0.1).step(),
    "adamw step": lambda m, w, b: (optim.AdamW if m is tg else torch.optim.AdamW)([w, b], lr=0.1).step(),
    "load_state_dict": lambda m, w, b: _load_into(m, w),
}


def _load_into(m, w):
    layer = nn.Linear(5, 3, dtype=np.float64) if m is tg else torch.nn.Linear(5, 3, dtype=torch.float64)
    layer.weight = w
    layer.load_state_dict({"weight": np.zeros((3, 5)) if m is tg else torch.zeros(3, 5, dtype=torch.float64),
                           "bias": layer.bias.data if m is tg else layer.bias.detach()})


@pytest.mark.parametrize("modify", list(MODIFIERS))
def test_parameter_changed_between_forward_and_backward_raises_in_both(modify):
    for m in (tg, torch):
        x, w, b = _setup(m)
        loss = _forward(m, x, w, b)
        loss.backward(retain_graph=True)  # gradients for the optimizers; the graph stays
        MODIFIERS[modify](m, w, b)
        error = ModifiedInPlaceError if m is tg else RuntimeError
        with pytest.raises(error, match="modified by an in-?place operation"):
            loss.backward()


def test_the_error_names_the_op_and_is_a_tinygpt_error():
    x, w, b = _setup(tg)
    loss = (F.linear(x, w, b) ** 2).sum()
    w.bump_version()
    with pytest.raises(ModifiedInPlaceError, match="gradient of LinearFn") as info:
        loss.backward()
    assert isinstance(info.value, TinyGPTError) and isinstance(info.value, RuntimeError)


def test_unmodified_parameters_backward_twice_and_step_after_backward_in_both():
    grads = {}
    for m in (tg, torch):
        x, w, b = _setup(m)
        opt = (optim.SGD if m is tg else torch.optim.SGD)([w, b], lr=0.1)
        for _ in range(2):  # forward, backward, step: the usual order never raises
            opt.zero_grad()
            loss = _forward(m, x, w, b)
            loss.backward()
            opt.step()
        grads[m] = np.asarray(w.grad if m is tg else w.grad.numpy())
    np.testing.assert_allclose(grads[tg], grads[torch], **tolerance("op", np.float64))


def test_an_op_that_saved_nothing_of_its_input_lets_it_change_as_torch_does():
    for m in (tg, torch):
        x, w, b = _setup(m)
        loss = ((x @ w.transpose(0, 1)).sum(dim=0) + b).sum()  # b reaches loss by + only
        with (tg.no_grad() if m is tg else torch.no_grad()):
            if m is tg:
                b.data += 1.0
                b.bump_version()
            else:
                b.add_(1.0)
        loss.backward()  # neither needs b's values
        assert (b.grad == 1.0).all()


def test_a_weight_read_only_for_an_input_without_gradient_may_change_as_in_torch():
    # x @ W.T with x constant: backward reads x (for W's gradient), never W, in torch and here
    grads = {}
    for m in (tg, torch):
        x, w, _ = _setup(m)
        x = x.detach() if m is torch else tg.tensor(x.data)
        loss = ((x @ w.transpose(0, 1)) ** 2).sum() + (F if m is tg else torch.nn.functional).linear(x, w).sum()
        with (tg.no_grad() if m is tg else torch.no_grad()):
            if m is tg:
                w.data *= 2.0
                w.bump_version()
            else:
                w.mul_(2.0)
        loss.backward()
        grads[m] = np.asarray(w.grad if m is tg else w.grad.numpy())
    np.testing.assert_allclose(grads[tg], grads[torch], **tolerance("op", np.float64))


# ---- LayerNorm under overflow: NaN rows, as torch, in the op and both kernels -----------------

OVERFLOW_ROWS = {"inf": [np.inf, 1.0, 2.0, 3.0], "-inf": [1.0, -np.inf, 2.0, 3.0],
                 "huge": [3e38, -3e38, 3e38, -3e38], "huge constant": [3e38] * 4}


@pytest.mark.parametrize("row", list(OVERFLOW_ROWS))
def test_layer_norm_overflow_gives_nan_like_torch(row):
    x = np.array([OVERFLOW_ROWS[row], [1.0, 2.0, 3.0, 4.5]], np.float32)
    w, b = np.full(4, 1.5, np.float32), np.full(4, 0.25, np.float32)
    expected = torch.nn.functional.layer_norm(torch.tensor(x), (4,), torch.tensor(w), torch.tensor(b)).numpy()
    assert np.isnan(expected[0]).all(), "torch gives a NaN row"
    got = F.layer_norm(tg.tensor(x), tg.tensor(w), tg.tensor(b)).numpy()  # this run's kernel mode
    for name, forward in [("op", None), ("numba", layernorm.layernorm_forward_numba),
                          ("numpy", layernorm.layernorm_forward_ref)]:
        y = got if forward is None else forward(x, w, b, 1e-5)[0]
        assert np.isnan(y[0]).all(), f"{name}: {y[0]}"
        np.testing.assert_allclose(y[1], expected[1], **tolerance("op", np.float32), err_msg=name)


def test_layer_norm_overflowed_variance_is_nan_not_the_shift():
    # torch gives zeros here (its running deviations stay finite); the true values are finite and
    # non-zero, so tinygpt says NaN rather than a plausible row of `shift` (kernels/layernorm.py)
    x = np.array([[1e20, -1e20, 0.0, 5.0]], np.float32)
    w, b = np.ones(4, np.float32), np.zeros(4, np.float32)
    for forward in (layernorm.layernorm_forward_numba, layernorm.layernorm_forward_ref):
        assert np.isnan(forward(x, w, b, 1e-5)[0]).all()


def test_layer_norm_overflow_gradients_are_nan_only_in_that_row():
    x = tg.tensor(np.array([[3e38, -3e38, 3e38, -3e38], [1.0, 2.0, 3.0, 4.5]], np.float32), requires_grad=True)
    w, b = tg.ones(4, requires_grad=True), tg.zeros(4, requires_grad=True)
    F.layer_norm(x, w, b).sum().backward()
    assert np.isnan(x.grad[0]).all() and np.isfinite(x.grad[1]).all()


# ---- cross-entropy targets out of range ----------------------------------------------------

@pytest.mark.parametrize("bad", [5, -1, 99])
def test_cross_entropy_names_the_bad_target_and_the_class_count(bad):
    logits = tg.randn(3, 5, requires_grad=True)
    with pytest.raises(InputIndexError, match=f"target {bad} .*5 classes"):
        F.cross_entropy(logits, np.array([0, bad, 2]))
    with pytest.raises(IndexError):  # torch refuses it too
        torch.nn.functional.cross_entropy(torch.randn(3, 5), torch.tensor([0, bad, 2]))


def test_cross_entropy_checks_before_the_kernel(monkeypatch):
    def kernel(*args):
        raise AssertionError("the kernel ran on an out-of-range target")
    monkeypatch.setattr(kernels, "cross_entropy_forward", kernel)
    with pytest.raises(InputIndexError):
        F.cross_entropy(tg.randn(2, 4), np.array([4, 0]))


def test_cross_entropy_ignore_index_still_works_like_torch():
    rng = np.random.default_rng(1)
    logits, targets = rng.standard_normal((4, 5)), np.array([1, -100, 4, -100])
    ours = tg.tensor(logits, requires_grad=True)
    theirs = torch.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(ours, targets)
    expected = torch.nn.functional.cross_entropy(theirs, torch.tensor(targets))
    loss.backward()
    expected.backward()
    np.testing.assert_allclose(loss.item(), expected.item(), **tolerance("op", np.float64))
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), **tolerance("op", np.float64))
    loss = F.cross_entropy(tg.tensor(logits), np.array([1, 7, 4, 3]), ignore_index=7)
    assert np.isfinite(loss.item())


# ---- construction from data that is not numbers, layers of impossible sizes ---------------

@pytest.mark.parametrize("data", [["a", "b"], np.array(["x"]), np.array([object(), 1]), [1 + 2j],
                                  np.array(["2024-01-01"], dtype="datetime64[D]")],
                         ids=["str list", "str array", "object array", "complex", "dates"])
def test_tensors_hold_numbers_only(data):
    with pytest.raises(InputTypeError, match="tensor holds numbers"):
        tg.tensor(data)
    with pytest.raises(InputTypeError, match="tensor holds numbers"):
        tg.Tensor(data)


def test_a_number_dtype_that_the_data_cannot_take_is_a_type_error():
    with pytest.raises(InputTypeError, match="float32"):
        tg.tensor(["a"], dtype=np.float32)
    with pytest.raises(InputTypeError, match="tensor holds numbers"):
        tg.tensor([1.0], dtype=np.str_)


@pytest.mark.parametrize("make, error, words", [
    (lambda: nn.Linear(-1, 3), InputError, ["Linear", "in_features", "-1"]),
    (lambda: nn.Linear(4, 0), InputError, ["Linear", "out_features", "0"]),
    (lambda: nn.Linear(2.5, 3), InputTypeError, ["Linear", "in_features", "2.5"]),
    (lambda: nn.Embedding(0, 4), InputError, ["Embedding", "num_embeddings", "0"]),
    (lambda: nn.Embedding(10, "4"), InputTypeError, ["Embedding", "embedding_dim", "'4'"]),
    (lambda: nn.LayerNorm(-8), InputError, ["LayerNorm", "emb_dim", "-8"]),
    (lambda: nn.LayerNorm(True), InputTypeError, ["LayerNorm", "emb_dim", "True"]),
])
def test_layers_refuse_impossible_sizes_naming_the_argument(make, error, words):
    with pytest.raises(error) as info:
        make()
    assert all(w in str(info.value) for w in words), str(info.value)


def test_layers_take_numpy_integer_sizes():
    layer = nn.Linear(np.int64(4), np.int32(3))
    assert layer.weight.shape == (3, 4) and type(layer.in_features) is int
