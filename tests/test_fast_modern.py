"""FastGroupedQueryAttention and FastFeedForward (tinygpt/model/fast_modern.py), the layers
`for_inference` puts in a Qwen3Model or Llama3Model, against the book-shaped GroupedQueryAttention
and FeedForward the models are built of, on the same weights: equal logits at every KV-cache
decoding step and in evaluation, the same greedy and sampled tokens, that decoding actually takes the cached-attention kernel (one call per layer
and step) and the packed products, that a long prompt, training and evaluation without a cache do
not take the kernel, and that a cast, new arrays or LoRA end the packed products (the layers then
run themselves) without changing a result."""
import numpy as np
import pytest
from modern_models import TINY_LLAMA, TINY_QWEN3, randomize_norms, tokens

import tinygpt as tg
import tinygpt.kernels as kernels
from tinygpt.model import Llama3Model, Qwen3Model, for_inference, generate
from tinygpt.finetune.lora import merge_lora, replace_linear_with_lora
from tinygpt.model.fast_modern import DECODE_TOKENS, FastFeedForward, FastGroupedQueryAttention
from tinygpt.model.modern import FeedForward, GroupedQueryAttention
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
    """(book-shaped, fast) models with the same weights (randomised norm scales): the fast one is
    a copy readied by for_inference."""
    cls, base = MODELS[kind]
    tg.manual_seed(3)
    book = randomize_norms(cls({**base, **cfg})).to(dtype).eval()
    fast = cls({**base, **cfg}).to(dtype)
    fast.load_state_dict(book.state_dict())
    fast = for_inference(fast).eval()
    assert type(book.trf_blocks[0].att) is GroupedQueryAttention and type(book.trf_blocks[0].ff) is FeedForward
    assert type(fast.trf_blocks[0].att) is FastGroupedQueryAttention
    assert type(fast.trf_blocks[0].ff) is FastFeedForward
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


def packed(model):
    """Per block: (attention's Q/K/V packing intact, feed-forward's fc1/fc2 packing intact)."""
    return [(block.att.packed, block.ff.packed) for block in model.trf_blocks]


def eval_logits(model, ids):
    with tg.no_grad():
        return model(ids).data


@pytest.mark.parametrize("kind", MODELS)
def test_evaluation_logits_equal_and_the_packed_products_answer(kind, monkeypatch):
    book, fast = pair(kind, np.float32)
    ids = tokens(book.cfg, batch=2, length=DECODE_TOKENS + 3)
    calls = []
    product = type(fast.trf_blocks[0].ff._fc12).__call__
    monkeypatch.setattr(type(fast.trf_blocks[0].ff._fc12), "__call__",
                        lambda self, x: calls.append(self.names) or product(self, x))
    want = eval_logits(book, ids)
    got = eval_logits(fast, ids)
    assert calls == []                                          # a prompt: the book's layers
    np.testing.assert_allclose(got, want, **scaled(want))
    calls.clear()
    decode_logits(fast, ids[:, :3], 2)
    assert calls == [("W_query", "W_key", "W_value"), ("fc1", "fc2")] * (3 * fast.cfg["n_layers"])


def scaled(want, dtype=np.float32):
    tol = tolerance("model", dtype)
    return dict(rtol=tol["rtol"], atol=tol["atol"] * np.abs(want).max())


def test_a_cast_new_arrays_and_lora_end_the_packing_and_change_no_result():
    book, fast = pair("qwen3", np.float32)
    ids = tokens(book.cfg, batch=1, length=6)
    assert all(a and f for a, f in packed(fast))
    fast.to(np.float64)                                    # Module.to: new arrays, unpacked
    book.to(np.float64)
    assert not any(a or f for a, f in packed(fast))
    want = decode_logits(book, ids, 4)
    np.testing.assert_allclose(decode_logits(fast, ids, 4), want, **scaled(want, np.float64))
    for_inference(fast)                                    # packed again
    assert all(a and f for a, f in packed(fast))
    np.testing.assert_allclose(decode_logits(fast, ids, 4), want, **scaled(want, np.float64))
    ff = fast.trf_blocks[0].ff
    ff.fc1.weight.data = ff.fc1.weight.data.copy()         # a new array: the layers run themselves
    ff.fc1.weight.data[0] += 1.0
    book.trf_blocks[0].ff.fc1.weight.data[0] += 1.0
    assert packed(fast)[0] == (True, False)
    np.testing.assert_allclose(eval_logits(fast, ids), eval_logits(book, ids), **scaled(eval_logits(book, ids), np.float64))
    tg.manual_seed(4)
    replace_linear_with_lora(fast, rank=2, alpha=4.0)
    tg.manual_seed(4)
    replace_linear_with_lora(book, rank=2, alpha=4.0)
    for model in (fast, book):                              # B starts at zero: make LoRA count
        for name, p in model.named_parameters():
            if name.endswith(".B"):
                p.data[...] = 0.1
    assert not any(a or f for a, f in packed(fast))
    want = decode_logits(book, ids, 4)
    np.testing.assert_allclose(decode_logits(fast, ids, 4), want, **scaled(want, np.float64))
    merge_lora(fast)
    assert packed(fast)[1] == (True, True)                  # the packed Linears are back, merged in place
    np.testing.assert_allclose(decode_logits(fast, ids, 4), want, **scaled(want, np.float64))
