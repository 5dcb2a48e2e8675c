"""FastGroupedQueryAttention (tinygpt/model/fast_gqa.py), the attention Qwen3Model and Llama3Model
build, against the book-shaped GroupedQueryAttention on the same weights: equal logits at every
KV-cache decoding step and the same greedy and sampled tokens, that decoding actually takes the
cached-attention kernel (one call per layer and step) and that a long prompt, training and
evaluation without a cache do not."""
import numpy as np
import pytest
from modern_models import TINY_LLAMA, TINY_QWEN3, randomize_norms, tokens

import tinygpt as tg
import tinygpt.kernels as kernels
from tinygpt.model import Llama3Model, Qwen3Model, generate
from tinygpt.model.fast_gqa import DECODE_TOKENS, FastGroupedQueryAttention
from tinygpt.model.modern import GroupedQueryAttention
from helpers import tolerance

MODELS = {"qwen3": (Qwen3Model, TINY_QWEN3), "llama": (Llama3Model, TINY_LLAMA)}


@pytest.fixture
def kernel_calls(monkeypatch):
    seen = []
    kernel = kernels.cached_attention

    def counted(q, *args):
        seen.append(q.shape[2])  # the new tokens of each call
        return kernel(q, *args)
    monkeypatch.setattr(kernels, "cached_attention", counted)
    return seen


def pair(kind, dtype, **cfg):
    """(book-shaped, fast) models with the same weights (randomised norm scales)."""
    cls, base = MODELS[kind]
    book_cls = type(f"Book{cls.__name__}", (cls,), {"attention": GroupedQueryAttention})
    tg.manual_seed(3)
    fast = randomize_norms(cls({**base, **cfg})).to(dtype).eval()
    book = book_cls({**base, **cfg}).to(dtype).eval()
    book.load_state_dict(fast.state_dict())
    assert isinstance(fast.trf_blocks[0].att, FastGroupedQueryAttention)
    assert type(book.trf_blocks[0].att) is GroupedQueryAttention
    return book, fast


def decode_logits(model, prompt, steps):
    """Logits of the prompt's last token, then of each greedily chosen token, with a KV cache."""
    cache, out = model.new_kv_cache(), []
    with tg.no_grad():
        logits = model(prompt, kv_cache=cache, last_only=True).data[:, -1]
        for _ in range(steps):
            out.append(logits)
            nxt = logits.argmax(-1)[:, None]
            logits = model(nxt, kv_cache=cache, last_only=True).data[:, -1]
    return np.stack(out)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decoding_logits_equal_the_book_shaped_attention(kind, dtype, kernel_calls):
    book, fast = pair(kind, dtype)
    prompt = tokens(book.cfg, batch=2, length=5)
    want = decode_logits(book, prompt, 12)
    assert kernel_calls == []                     # the book-shaped class never calls the kernel
    got = decode_logits(fast, prompt, 12)
    n_layers = fast.cfg["n_layers"]
    assert kernel_calls == [5] * n_layers + [1] * 12 * n_layers  # the prompt, then 12 steps
    tol = tolerance("model", dtype)  # judged against the largest logit, as the model tests do
    np.testing.assert_allclose(got, want, rtol=tol["rtol"], atol=tol["atol"] * np.abs(want).max())


@pytest.mark.parametrize("kind", MODELS)
def test_generate_gives_the_same_tokens_greedy_and_sampled(kind):
    book, fast = pair(kind, np.float64)
    prompt = tokens(book.cfg, batch=1, length=4)
    assert np.array_equal(generate(book, prompt, 15, 30), generate(fast, prompt, 15, 30))
    runs = []
    for model in (book, fast):
        tg.manual_seed(11)
        runs.append(generate(model, prompt, 15, 30, temperature=1.3, top_k=20))
    assert np.array_equal(*runs)


def test_a_long_prompt_and_no_cache_take_the_composed_ops(kernel_calls):
    book, fast = pair("qwen3", np.float32)
    long_prompt = tokens(book.cfg, batch=1, length=DECODE_TOKENS + 1)
    with tg.no_grad():
        fast(long_prompt, kv_cache=fast.new_kv_cache())
        fast(long_prompt)                          # evaluation: no cache
    assert kernel_calls == []
    fast.train()
    ids = tokens(book.cfg, batch=2, length=6)
    loss = fast(ids).sum()
    loss.backward()                                # training records its graph as before
    assert kernel_calls == [] and fast.trf_blocks[0].att.W_query.weight.grad is not None
