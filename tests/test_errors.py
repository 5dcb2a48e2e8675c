"""Bad input gives a clear error: the type is right and the message names what is wrong."""
import re

import numpy as np
import pytest

import tinygpt as tg
import tinygpt.nn.functional as F
from tinygpt import nn


def names_all(*parts):
    """A regex that matches a message containing every one of `parts` literally, in any order."""
    return "(?s)" + "".join(f"(?=.*{re.escape(p)})" for p in parts)


def t(*shape, dtype=np.float32):
    return tg.Tensor(np.ones(shape, dtype), requires_grad=True)


# ---- shapes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow"])
def test_binary_shape_mismatch_names_both_shapes(op):
    fn = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
          "div": lambda a, b: a / b, "pow": lambda a, b: a ** b}[op]
    with pytest.raises(ValueError, match=names_all("(2, 3)", "(4,)")):
        fn(t(2, 3), t(4))


def test_matmul_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=names_all("(2, 3)", "(4, 5)")):
        t(2, 3) @ t(4, 5)
    with pytest.raises(ValueError, match=names_all("(2, 2, 3)", "(3, 3, 4)")):
        tg.matmul(t(2, 2, 3), t(3, 3, 4))  # batch dims 2 vs 3 do not broadcast


def test_cat_shape_mismatch_names_shapes():
    with pytest.raises(ValueError, match=names_all("(2, 3)", "(2, 4)")):
        tg.cat([t(2, 3), t(2, 4)], dim=0)


def test_stack_shape_mismatch_names_shapes():
    with pytest.raises(ValueError, match=names_all("(2, 3)", "(3, 2)")):
        tg.stack([t(2, 3), t(3, 2)])


def test_reshape_wrong_size_names_shapes():
    with pytest.raises(ValueError, match=names_all("(2, 3)", "(4,)")):
        t(2, 3).reshape(4)


def test_masked_fill_mask_shape_mismatch():
    with pytest.raises(ValueError, match=names_all("(2, 3)", "(4,)")):
        t(2, 3).masked_fill(np.zeros(4, bool), 0.0)


def test_where_shape_mismatch():
    with pytest.raises(ValueError, match=names_all("(2, 3)", "(5,)")):
        tg.where(np.zeros((2, 3), bool), t(2, 3), t(5))


def test_cross_entropy_shape_mismatch():
    with pytest.raises(ValueError, match=names_all("(4, 5)", "(3,)")):
        F.cross_entropy(t(4, 5), np.zeros(3, np.int64))


def test_layer_norm_param_shape_mismatch():
    with pytest.raises(ValueError, match=names_all("(2, 4)", "(3,)")):
        F.layer_norm(t(2, 4), t(3), t(3))


def test_linear_in_features_mismatch_names_shapes():
    with pytest.raises(ValueError, match=names_all("(2, 5, 4)", "in_features = 3", "(6, 3)")):
        F.linear(t(2, 5, 4), t(6, 3))
    with pytest.raises(ValueError, match=names_all("Linear(3, 6)", "(2, 4)")):
        nn.Linear(3, 6)(t(2, 4))


# ---- dtypes ---------------------------------------------------------------------------------

def test_float_index_array_is_a_type_error():
    with pytest.raises(TypeError, match="float"):
        t(4, 2)[np.array([0.0, 1.0])]


def test_embedding_float_ids_is_a_type_error():
    with pytest.raises(TypeError, match="float"):
        F.embedding(np.array([0.0, 1.0]), t(4, 2))


def test_cross_entropy_float_targets_is_a_type_error():
    with pytest.raises(TypeError, match="float"):
        F.cross_entropy(t(2, 3), np.array([0.0, 1.0]))


# ---- backward -------------------------------------------------------------------------------

def test_backward_non_scalar_message():
    with pytest.raises(RuntimeError, match="scalar"):
        (t(2, 3) * 2.0).backward()


def test_backward_twice_message():
    y = (t(3) * t(3)).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


# ---- load_state_dict ------------------------------------------------------------------------

def linear_state():
    return {k: np.array(v, copy=True) for k, v in nn.Linear(3, 2).state_dict().items()}


def test_load_state_dict_missing_key_is_listed():
    sd = linear_state()
    del sd["bias"]
    with pytest.raises((RuntimeError, KeyError, ValueError), match=names_all("bias")) as info:
        nn.Linear(3, 2).load_state_dict(sd)
    assert re.search("missing", str(info.value), re.I)


def test_load_state_dict_unexpected_key_is_listed():
    sd = linear_state()
    sd["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises((RuntimeError, KeyError, ValueError), match=names_all("extra.weight")) as info:
        nn.Linear(3, 2).load_state_dict(sd)
    assert re.search("unexpected", str(info.value), re.I)


def test_load_state_dict_shape_mismatch_names_key_and_shapes():
    sd = linear_state()
    sd["weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises((RuntimeError, ValueError), match=names_all("weight", "(3, 3)", "(2, 3)")):
        nn.Linear(3, 2).load_state_dict(sd)


def test_load_state_dict_lists_every_problem_at_once():
    sd = linear_state()
    del sd["bias"]
    sd["weight"] = np.zeros((1, 3), np.float32)
    sd["foo"] = np.zeros(1, np.float32)
    with pytest.raises((RuntimeError, KeyError, ValueError),
                       match=names_all("bias", "foo", "weight", "(1, 3)", "(2, 3)")):
        nn.Linear(3, 2).load_state_dict(sd)


def test_load_state_dict_non_strict_tolerates_missing_and_unexpected():
    sd = linear_state()
    del sd["bias"]
    sd["foo"] = np.zeros(1, np.float32)
    model = nn.Linear(3, 2)
    model.load_state_dict(sd, strict=False)
    np.testing.assert_array_equal(model.state_dict()["weight"], sd["weight"])


def test_load_state_dict_non_strict_still_rejects_shape_mismatch():
    sd = linear_state()
    sd["weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises((RuntimeError, ValueError), match=names_all("weight", "(3, 3)")):
        nn.Linear(3, 2).load_state_dict(sd, strict=False)
