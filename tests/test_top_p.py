"""Nucleus (top-p) sampling in `tinygpt.generate`: the kept set equals transformers'
TopPLogitsWarper, tokens outside it are never drawn, top_p=1.0 changes nothing, bad values are
refused; with a Qwen3Model through the KV cache and without it the tokens agree."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from transformers.generation.logits_process import TopPLogitsWarper

import tinygpt as tg
from modern_models import TINY_QWEN3, tokens
from tinygpt.model import Qwen3Model
from tinygpt.model.generate import top_p_filter


@settings(max_examples=40)
@given(seed=st.integers(0, 10_000), top_p=st.floats(0.05, 0.99), temperature=st.sampled_from([0.5, 1.0, 2.0]))
def test_kept_tokens_are_transformers_nucleus(seed, top_p, temperature):
    logits = np.random.default_rng(seed).normal(0, 2, (3, 40))
    probs = np.exp((logits - logits.max(-1, keepdims=True)) / temperature)
    ours = top_p_filter(probs, top_p) > 0
    theirs = TopPLogitsWarper(top_p)(None, torch.from_numpy(logits / temperature))
    np.testing.assert_array_equal(ours, torch.isfinite(theirs).numpy())


class Fixed:
    """A stand-in model whose next-token logits are always the same row."""
    cfg = {"context_length": 100}

    def __init__(self, logits):
        self.logits = np.asarray(logits, np.float32)

    def __call__(self, ids):
        return tg.Tensor(np.broadcast_to(self.logits, (*ids.shape, self.logits.size)).copy())


def test_only_the_nucleus_is_drawn():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    model = Fixed(np.log(probs))
    tg.manual_seed(0)
    out = tg.generate(model, np.zeros((1, 1), np.int64), 300, 100, temperature=1.0, top_p=0.75,
                      use_cache=False)[0, 1:]
    assert set(out.tolist()) == {0, 1}  # 0.5 + 0.3 reach 0.75; 2 and 3 never come
    assert abs((out == 0).mean() - 0.5 / 0.8) < 0.1


def test_top_p_one_changes_nothing_and_bad_values_are_refused():
    model = Fixed(np.log([0.4, 0.3, 0.2, 0.1]))
    runs = []
    for top_p in (None, 1.0):
        tg.manual_seed(3)
        runs.append(tg.generate(model, np.zeros((1, 1), np.int64), 30, 100, temperature=1.0,
                                top_p=top_p, use_cache=False))
    np.testing.assert_array_equal(*runs)
    for bad in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(tg.errors.InputError, match="top_p"):
            tg.generate(model, np.zeros((1, 1), np.int64), 1, 100, top_p=bad, use_cache=False)
    with pytest.raises(tg.errors.InputTypeError, match="top_p"):
        tg.generate(model, np.zeros((1, 1), np.int64), 1, 100, top_p="0.9", use_cache=False)


def test_sampling_with_top_p_is_the_same_with_and_without_the_kv_cache():
    tg.manual_seed(1)
    model = Qwen3Model(TINY_QWEN3).to(np.float64).eval()
    prompt = tokens(TINY_QWEN3, batch=1, length=3)
    runs = []
    for use_cache in (True, False):
        tg.manual_seed(7)
        runs.append(tg.generate(model, prompt, 15, 32, temperature=1.3, top_k=20, top_p=0.8,
                                use_cache=use_cache))
    np.testing.assert_array_equal(*runs)
