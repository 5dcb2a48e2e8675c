"""Qwen3Model against the book's `llms_from_scratch.qwen3.Qwen3Model` with the weights moved across
(state dicts interchange both ways): logits, every parameter gradient, greedy generation with and
without the KV cache; the config dicts against the book's; training steps lower the loss."""
import numpy as np
import pytest
import torch

import tinygpt as tg
from modern_models import (TINY_QWEN3, check_generation, compare_grads, compare_logits,
                           decode_through_cache, exact_float64, greedy_torch, loss_and_grads,
                           randomize_norms, tokens, torch_loss_and_grads, train_steps)
from tinygpt.model import QWEN3_CONFIGS, Qwen3Model
book = pytest.importorskip("llms_from_scratch.qwen3")  # the book's package: pip install --no-deps llms-from-scratch

TORCH = {np.float32: torch.float32, np.float64: torch.float64}


def twins(cfg, dtype, seed=0):
    """(tinygpt Qwen3Model, the book's Qwen3Model holding the same weights)."""
    tg.manual_seed(seed)
    ours = randomize_norms(Qwen3Model(cfg), seed).to(dtype)
    theirs = book.Qwen3Model({**cfg, "dtype": TORCH[dtype]}).to(TORCH[dtype])
    missing = theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    assert not missing.missing_keys and not missing.unexpected_keys
    if dtype == np.float64:
        exact_float64(theirs, cfg["head_dim"], cfg["rope_base"], cfg["context_length"])
    return ours, theirs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_and_gradients_match_the_book(dtype):
    ours, theirs = twins(TINY_QWEN3, dtype)
    ids, targets = tokens(TINY_QWEN3), tokens(TINY_QWEN3, seed=1)
    logits, grads = loss_and_grads(ours, ids, targets)
    t_logits, t_grads = torch_loss_and_grads(theirs, ids, targets)
    assert logits.dtype == dtype
    compare_logits(logits, t_logits, dtype, "qwen3 logits")
    compare_grads(grads, t_grads, {n: n for n in grads}, dtype, "qwen3")


def test_greedy_generation_matches_the_book_with_and_without_cache():
    ours, theirs = twins(TINY_QWEN3, np.float64, seed=2)
    prompt = tokens(TINY_QWEN3, batch=1, length=4, seed=3)
    check_generation(ours, greedy_torch(theirs, prompt, 20), prompt, TINY_QWEN3["context_length"])


def test_state_dict_names_are_the_books():
    theirs = book.Qwen3Model({**TINY_QWEN3, "dtype": torch.float32})
    assert list(Qwen3Model(TINY_QWEN3).state_dict()) == list(theirs.state_dict())
    ours = Qwen3Model(TINY_QWEN3)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    np.testing.assert_array_equal(ours.trf_blocks[1].att.W_key.weight.data,
                                  theirs.trf_blocks[1].att.W_key.weight.detach().numpy())


def test_the_module_tree_is_the_books_class_by_class():
    """What Qwen3Model's constructor builds: the book's module classes, names and order."""
    ours = Qwen3Model(TINY_QWEN3)
    theirs = book.Qwen3Model({**TINY_QWEN3, "dtype": torch.float32})
    assert ([(n, type(m).__name__) for n, m in ours.named_modules()]
            == [(n, type(m).__name__) for n, m in theirs.named_modules()])


def test_rotary_model_is_only_the_shared_base():
    from tinygpt.errors import TinyGPTError
    from tinygpt.model import RotaryModel
    with pytest.raises(TinyGPTError, match="Qwen3Model and Llama3Model"):
        RotaryModel(TINY_QWEN3)


@pytest.mark.parametrize("size,book_cfg", [("0.6B", book.QWEN_CONFIG_06_B), ("1.7B", book.QWEN3_CONFIG_1_7B),
                                           ("4B", book.QWEN3_CONFIG_4B), ("8B", book.QWEN3_CONFIG_8B)])
def test_configs_are_the_books(size, book_cfg):
    assert QWEN3_CONFIGS[size] == {k: v for k, v in book_cfg.items() if k != "dtype"}


def test_kv_cache_decode_equals_the_full_forward():
    """Prompt through the cache, then one token at a time: each step's logits equal the full
    forward's at that position (positions reach RoPE through the cache's length)."""
    ours, _ = twins(TINY_QWEN3, np.float64, seed=4)
    ids = tokens(TINY_QWEN3, batch=2, length=9, seed=5)
    with tg.no_grad():
        full = ours(ids).data
    stepped, cache = decode_through_cache(ours, ids, prefill=5)
    np.testing.assert_allclose(stepped, full, rtol=1e-12, atol=1e-12)
    assert cache.layers[0].k.shape == (2, TINY_QWEN3["n_kv_groups"], TINY_QWEN3["context_length"], 8)


def test_training_steps_lower_the_loss():
    tg.manual_seed(0)
    model = Qwen3Model({**TINY_QWEN3, "tie_weights": True})
    assert model.weights_tied
    losses = train_steps(model, tokens(TINY_QWEN3, batch=2, length=12, seed=6))
    assert losses[-1] < 0.7 * losses[0], losses


def test_the_0_6b_config_has_the_books_parameter_count():
    """The book prints 751,632,384 parameters, 596,049,920 unique with the head tied to the
    embedding; counted from the shapes load_pretrained expects (no 2.4 GB model is built)."""
    from tinygpt.weights.hf import expected_shapes
    counts = [sum(int(np.prod(shape)) for _, shape in
                  expected_shapes({**QWEN3_CONFIGS["0.6B"], "tie_weights": tie}, "scale").values())
              for tie in (False, True)]
    assert counts == [751_632_384, 596_049_920]
