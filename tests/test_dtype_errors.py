"""Ops that need floating point refuse integer (and bool) tensors with InputTypeError, where PyTorch
refuses them too; exp/log/tanh/sqrt promote integers to float32, as torch does (issue 27.11)."""
import numpy as np
import pytest
import torch

import tinygpt as tg
from tinygpt import nn
from tinygpt.errors import InputTypeError

F = nn.functional
INTS = np.array([[1, 2, 3]])
REFUSING = {  # op -> (tinygpt call, the same call in torch, which must refuse it too)
    "softmax": (lambda x: tg.ops.softmax(x, -1), lambda t: torch.softmax(t, -1)),
    "log_softmax": (lambda x: tg.ops.log_softmax(x, -1), lambda t: torch.log_softmax(t, -1)),
    "Tensor.softmax": (lambda x: x.softmax(-1), lambda t: t.softmax(-1)),
    "cross_entropy": (lambda x: F.cross_entropy(x, np.array([1])),
                      lambda t: torch.nn.functional.cross_entropy(t, torch.tensor([1]))),
    "layer_norm": (lambda x: F.layer_norm(x, tg.tensor(np.ones(3, np.int64)), tg.tensor(np.zeros(3, np.int64))),
                   lambda t: torch.nn.functional.layer_norm(t, (3,), torch.ones(3, dtype=torch.long))),
    "gelu": (lambda x: F.gelu(x), lambda t: torch.nn.functional.gelu(t)),
    "mean": (lambda x: x.mean(), lambda t: t.mean()),
    "var": (lambda x: x.var(), lambda t: t.var()),
    "dropout": (lambda x: F.dropout(x, 0.5, training=True),
                lambda t: torch.nn.functional.dropout(t, 0.5, training=True)),
    "scaled_causal_softmax": (lambda x: F.scaled_causal_softmax(x.reshape(1, 1, 3), 0.5),
                              lambda t: torch.softmax(t, -1)),
}


# torch's own refusal: NotImplementedError ("... not implemented for 'Long'") where no kernel is
# registered for the dtype, RuntimeError where the op checks the dtype itself
TORCH_REFUSES_WITH = {"mean": RuntimeError, "var": RuntimeError, "dropout": RuntimeError}


@pytest.mark.parametrize("op", list(REFUSING))
def test_integer_input_is_refused_like_torch(op):
    ours, theirs = REFUSING[op]
    with pytest.raises(TORCH_REFUSES_WITH.get(op, NotImplementedError)):
        theirs(torch.tensor(INTS))
    with pytest.raises(InputTypeError, match="int64"):
        ours(tg.tensor(INTS))
    with pytest.raises(InputTypeError, match="bool"):
        ours(tg.tensor(INTS > 1))


def test_the_issue_examples_now_raise_instead_of_giving_wrong_numbers():
    with pytest.raises(InputTypeError, match="cross_entropy"):
        F.cross_entropy(tg.Tensor(np.array([[1, 2, 3]])), np.array([1]))  # returned the int 1
    with pytest.raises(TypeError, match="softmax"):                         # returned [[0, 0, 1]]
        F.softmax(tg.Tensor(np.array([[1, 2, 3]])))
    loss = F.cross_entropy(tg.Tensor(np.array([[1.0, 2.0, 3.0]])), np.array([1]))
    assert abs(loss.item() - 1.4076) < 1e-4


def test_dropout_in_eval_mode_passes_integers_through_like_torch():
    x = tg.tensor(INTS)
    assert F.dropout(x, 0.5, training=False) is x


@pytest.mark.parametrize("name", ["exp", "log", "tanh", "sqrt"])
def test_elementwise_math_promotes_integers_to_float32_like_torch(name):
    got = getattr(tg.tensor(INTS), name)()
    want = getattr(torch.tensor(INTS), name)()
    assert got.dtype == np.float32 and want.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
