"""Llama3Model against the book's `llms_from_scratch.llama3.Llama3Model` with the weights moved
across (state dicts interchange both ways): logits, every parameter gradient, greedy generation
with and without the KV cache, with Llama 3's RoPE frequency scaling in every band; the config
dicts against the book's."""
import numpy as np
import pytest
import torch

import tinygpt as tg
from modern_models import (TINY_LLAMA, check_generation, compare_grads, compare_logits,
                           exact_float64, greedy_torch, loss_and_grads, randomize_norms, tokens,
                           torch_loss_and_grads)
from tinygpt.model import LLAMA32_CONFIGS, Llama3Model
book = pytest.importorskip("llms_from_scratch.llama3")  # the book's package: pip install --no-deps llms-from-scratch

TORCH = {np.float32: torch.float32, np.float64: torch.float64}
HEAD_DIM = TINY_LLAMA["emb_dim"] // TINY_LLAMA["n_heads"]


def twins(cfg, dtype, seed=0):
    """(tinygpt Llama3Model, the book's Llama3Model holding the same weights)."""
    tg.manual_seed(seed)
    ours = randomize_norms(Llama3Model(cfg), seed).to(dtype)
    theirs = book.Llama3Model({**cfg, "dtype": TORCH[dtype]}).to(TORCH[dtype])
    result = theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    assert not result.missing_keys and not result.unexpected_keys
    if dtype == np.float64:
        exact_float64(theirs, HEAD_DIM, cfg["rope_base"], cfg["context_length"], cfg["rope_freq"])
    return ours, theirs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_and_gradients_match_the_book(dtype):
    ours, theirs = twins(TINY_LLAMA, dtype)
    ids, targets = tokens(TINY_LLAMA, length=30), tokens(TINY_LLAMA, length=30, seed=1)
    logits, grads = loss_and_grads(ours, ids, targets)
    t_logits, t_grads = torch_loss_and_grads(theirs, ids, targets)
    compare_logits(logits, t_logits, dtype, "llama3 logits")
    compare_grads(grads, t_grads, {n: n for n in grads}, dtype, "llama3")


def test_greedy_generation_matches_the_book_with_and_without_cache():
    ours, theirs = twins(TINY_LLAMA, np.float64, seed=2)
    prompt = tokens(TINY_LLAMA, batch=1, length=5, seed=3)
    check_generation(ours, greedy_torch(theirs, prompt, 20), prompt, TINY_LLAMA["context_length"])


def test_state_dict_names_are_the_books():
    theirs = book.Llama3Model({**TINY_LLAMA, "dtype": torch.float32})
    # the same names (the book's Llama builds W_key and W_value before W_query; the order is free)
    assert sorted(Llama3Model(TINY_LLAMA).state_dict()) == sorted(theirs.state_dict())


def test_the_module_tree_is_the_books_class_by_class():
    """What Llama3Model's constructor builds: the book's module classes under the book's names
    (torch.nn.RMSNorm is RMSNorm here, its parameter `weight`)."""
    ours = Llama3Model(TINY_LLAMA)
    theirs = book.Llama3Model({**TINY_LLAMA, "dtype": torch.float32})
    assert (sorted((n, type(m).__name__) for n, m in ours.named_modules())
            == sorted((n, type(m).__name__) for n, m in theirs.named_modules()))
    assert ours.final_norm.param_name == "weight"


def test_rmsnorm_names_its_parameter_as_either_book_model_does():
    from tinygpt.errors import TinyGPTError
    from tinygpt.model import RMSNorm
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    qwen, llama = RMSNorm(4), RMSNorm(4, param_name="weight")
    llama.weight.data[...] = qwen.scale.data[...] = [0.5, 1.0, 2.0, -1.0]
    assert list(qwen.state_dict()) == ["scale"] and list(llama.state_dict()) == ["weight"]
    np.testing.assert_array_equal(qwen(tg.tensor(x)).data, llama(tg.tensor(x)).data)
    with pytest.raises(TinyGPTError, match="param_name"):
        RMSNorm(4, param_name="gamma")


@pytest.mark.parametrize("size,book_cfg", [("1B", book.LLAMA32_CONFIG_1B), ("3B", book.LLAMA32_CONFIG_3B)])
def test_configs_are_the_books(size, book_cfg):
    assert LLAMA32_CONFIGS[size] == {k: v for k, v in book_cfg.items() if k != "dtype"}


def test_generation_past_the_window_slides_like_the_book():
    """context_size smaller than prompt + new tokens: the cached path rebuilds from the window
    each step, as the uncached one crops; both equal the book's model cropping the same way."""
    ours, theirs = twins(TINY_LLAMA, np.float64, seed=5)
    prompt = tokens(TINY_LLAMA, batch=1, length=6, seed=6)
    ids = torch.from_numpy(prompt)
    with torch.no_grad():
        for _ in range(20):
            nxt = theirs(ids[:, -10:])[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    check_generation(ours, ids.numpy(), prompt, 10)


def test_the_1b_config_has_the_books_parameter_count():
    """The book prints 1,498,482,688 parameters, 1,235,814,400 unique with the head tied;
    counted from the shapes load_pretrained expects (no 6 GB model is built)."""
    from tinygpt.weights.hf import expected_shapes
    cfg = {**LLAMA32_CONFIGS["1B"], "head_dim": 2048 // 32}
    counts = [sum(int(np.prod(shape)) for _, shape in
                  expected_shapes({**cfg, "tie_weights": tie}, "weight").values())
              for tie in (False, True)]
    assert counts == [1_498_482_688, 1_235_814_400]
