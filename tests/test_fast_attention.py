"""FastMultiHeadAttention (tinygpt/model/fast_attention.py), what `for_inference` puts in place of
GPTModel's MultiHeadAttention, against the book's MultiHeadAttention on the same weights: equal
outputs and gradients, the KV-cache kernel, weights that change in place or get new arrays, LoRA,
and that generation and evaluation of a model readied by for_inference actually take the fast
route."""
import numpy as np
import pytest
import torch
from reference import torch_gpt as ref

import tinygpt as tg
import tinygpt.kernels as kernels
from tinygpt.finetune.lora import lora_modules, merge_lora, replace_linear_with_lora
from tinygpt.model import (FastMultiHeadAttention, GPTModel, LayerKVCache, MultiHeadAttention,
                           for_inference, generate)
from helpers import tolerance

DTYPES = [np.float32, np.float64]


@pytest.fixture
def calls(monkeypatch):
    """Counts of the fast route's two pieces: the packed product and the cached-attention kernel."""
    seen = {"packed": 0, "kernel": 0}
    packed, kernel = FastMultiHeadAttention._heads_packed, kernels.cached_attention

    def count(key, fn):
        def wrapper(*args):
            seen[key] += 1
            return fn(*args)
        return wrapper
    monkeypatch.setattr(FastMultiHeadAttention, "_heads_packed", count("packed", packed))
    monkeypatch.setattr(kernels, "cached_attention", count("kernel", kernel))
    return seen


def _pair(dtype, d_in=6, d_out=8, heads=2, qkv_bias=True, dropout=0.0, ctx=16):
    """(book, fast) with the same weights; the fast one packed."""
    tg.manual_seed(1)
    book = MultiHeadAttention(d_in, d_out, ctx, dropout, heads, qkv_bias).to(dtype)
    fast = FastMultiHeadAttention(d_in, d_out, ctx, dropout, heads, qkv_bias).to(dtype)
    assert fast.packed == (dtype == np.float32)      # a cast gives the weights new arrays
    assert fast.pack()
    fast.load_state_dict(book.state_dict())
    assert fast.packed                               # loading copies into the packed storage
    return book, fast


def _x(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _grads(module, x, dout):
    xt = tg.tensor(x, requires_grad=True)
    out = module(xt)
    (out * tg.tensor(dout)).sum().backward()
    return out.data, {n: p.grad for n, p in module.named_parameters()}, xt.grad


# --- same outputs and gradients -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("d_in,d_out,heads,batch,tokens", [(6, 8, 2, 3, 5), (5, 15, 3, 1, 16),
                                                            (4, 4, 1, 2, 1)])
def test_same_outputs_and_gradients_as_multihead_attention(calls, dtype, qkv_bias, d_in, d_out,
                                                           heads, batch, tokens):
    book, fast = _pair(dtype, d_in, d_out, heads, qkv_bias)
    x = _x((batch, tokens, d_in), dtype)
    with tg.no_grad():
        np.testing.assert_allclose(fast(tg.tensor(x)).data, book(tg.tensor(x)).data, **tolerance("op", dtype))
    assert calls["packed"] == 1
    dout = _x((batch, tokens, d_out), dtype, seed=1)
    out_f, grads_f, gx_f = _grads(fast, x, dout)
    out_b, grads_b, gx_b = _grads(book, x, dout)
    assert calls["packed"] == 1                      # a graph is recorded: each Linear runs itself
    tol = tolerance("op", dtype)                     # the blocked kernel sums in its own order
    np.testing.assert_allclose(out_f, out_b, **tol)
    np.testing.assert_allclose(gx_f, gx_b, **tol)
    assert list(grads_f) == list(grads_b)
    for name in grads_b:
        np.testing.assert_allclose(grads_f[name], grads_b[name], err_msg=name, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_frozen_projections_take_the_packed_product_and_out_proj_still_trains(calls, dtype):
    """Grad mode on, but neither x nor W_query/W_key/W_value needs a gradient (a frozen block):
    the packed product runs, and out_proj's gradient equals the book's."""
    book, fast = _pair(dtype)
    for module in (book, fast):
        for layer in (module.W_query, module.W_key, module.W_value):
            layer.requires_grad_(False)
    x = _x((2, 7, 6), dtype)
    dout = tg.tensor(_x((2, 7, 8), dtype, seed=1))
    for module in (book, fast):
        (module(tg.tensor(x)) * dout).sum().backward()
    assert calls["packed"] == 1
    for name in ("out_proj.weight", "out_proj.bias"):
        got = dict(fast.named_parameters())[name].grad
        np.testing.assert_allclose(got, dict(book.named_parameters())[name].grad, **tolerance("op", dtype))


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_packed_product_matches_torch(calls, qkv_bias):
    _, fast = _pair(np.float32, qkv_bias=qkv_bias)
    x = _x((3, 5, 6), np.float32)
    with tg.no_grad():
        got = fast(tg.tensor(x)).data
    assert calls["packed"] == 1
    ref.copy_tinygpt_to_torch(fast, twin := ref.MultiHeadAttention(6, 8, 16, 0.0, 2, qkv_bias))
    with torch.no_grad():
        np.testing.assert_allclose(got, twin(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


# --- the KV cache ---------------------------------------------------------------------------------
@pytest.mark.parametrize("chunks", [[8], [1] * 8, [3, 1, 4]])
def test_kv_cache_kernel_equals_the_book_forward(calls, chunks):
    book, fast = _pair(np.float64, d_in=4, d_out=6, heads=3, ctx=8)
    x = _x((2, 8, 4), np.float64)
    full = book(tg.tensor(x)).data
    cache, outs, start = LayerKVCache(8), [], 0
    with tg.no_grad():
        for n in chunks:
            outs.append(fast(tg.tensor(x[:, start:start + n]), kv_cache=cache).data)
            start += n
    assert calls == {"packed": len(chunks), "kernel": len(chunks)}
    np.testing.assert_allclose(np.concatenate(outs, axis=1), full, rtol=1e-12, atol=1e-12)


def test_kv_cache_with_attention_dropout_uses_the_composed_ops(calls):
    """Training mode with attention dropout: no kernel (it has no dropout); p = 1 drops every
    weight, so the output is out_proj's bias alone."""
    _, fast = _pair(np.float64, d_in=4, d_out=6, heads=3, dropout=1.0, ctx=8)
    cache = LayerKVCache(8)
    with tg.no_grad():
        out = fast(tg.tensor(_x((2, 3, 4), np.float64)), kv_cache=cache).data
    assert calls == {"packed": 1, "kernel": 0} and cache.length == 3
    np.testing.assert_array_equal(out, np.broadcast_to(fast.out_proj.bias.data, out.shape))


# --- weights that change --------------------------------------------------------------------------
def _no_grad_and_graph_outputs(module, x):
    with tg.no_grad():
        fast = module(tg.tensor(x)).data
    return fast, module(tg.tensor(x)).data  # grad mode: the three Linear layers


def test_packing_survives_optimizer_steps_and_load_state_dict():
    _, fast = _pair(np.float32)
    x = _x((2, 5, 6), np.float32)
    targets = np.random.default_rng(2).integers(0, 8, (2, 5))
    optimizer = tg.optim.AdamW(fast.parameters(), lr=0.1)
    before = _no_grad_and_graph_outputs(fast, x)[0]
    for _ in range(2):  # updates land in the packed array: no_grad must not read stale weights
        optimizer.zero_grad()
        tg.nn.functional.cross_entropy(fast(tg.tensor(x)).flatten(0, 1), targets.ravel()).backward()
        optimizer.step()
    assert fast.packed
    packed, graph = _no_grad_and_graph_outputs(fast, x)
    assert not np.allclose(packed, before)
    np.testing.assert_allclose(packed, graph, rtol=1e-5, atol=1e-6)
    other = FastMultiHeadAttention(6, 8, 16, 0.0, 2, qkv_bias=True)
    other.load_state_dict(fast.state_dict())
    assert other.packed
    np.testing.assert_allclose(_no_grad_and_graph_outputs(other, x)[0], graph, rtol=1e-5, atol=1e-6)


def test_new_weight_arrays_end_the_packing_and_pack_restores_it(calls):
    _, fast = _pair(np.float32)
    x = _x((2, 5, 6), np.float32)
    fast.W_key.weight.data = fast.W_key.weight.data * 2.0       # a new array
    assert not fast.packed
    packed, graph = _no_grad_and_graph_outputs(fast, x)
    np.testing.assert_array_equal(packed, graph)
    assert calls["packed"] == 0
    assert fast.pack() and fast.W_key.weight.data.base is fast.W_query.weight.data.base
    storage = fast.W_query.weight.data
    assert fast.pack() and fast.W_query.weight.data is storage  # packed: left alone
    np.testing.assert_allclose(_no_grad_and_graph_outputs(fast, x)[0], graph, rtol=1e-5, atol=1e-6)
    assert calls["packed"] == 1

    _, swapped = _pair(np.float32)
    swapped.W_query.weight, swapped.W_key.weight = swapped.W_key.weight, swapped.W_query.weight
    assert not swapped.packed  # each view is still in the packed array, at the other's rows
    packed, graph = _no_grad_and_graph_outputs(swapped, x)
    np.testing.assert_array_equal(packed, graph)
    assert swapped.pack()      # packs the swapped weights where they now are
    np.testing.assert_allclose(_no_grad_and_graph_outputs(swapped, x)[0], graph, rtol=1e-5, atol=1e-6)

    _, unbiased = _pair(np.float32, qkv_bias=False)
    unbiased.W_value.bias = tg.nn.Parameter(np.ones(8, np.float32))  # a bias the packing lacks
    assert not unbiased.packed and not unbiased.pack()  # some with bias, some without: unpacked


def test_for_inference_packs_again_after_a_cast(calls):
    tg.manual_seed(0)
    model = for_inference(GPTModel({"vocab_size": 31, "context_length": 8, "emb_dim": 8,
                                    "n_heads": 2, "n_layers": 2, "drop_rate": 0.0,
                                    "qkv_bias": True}))
    model.to(np.float64)                           # new arrays: the layers run themselves
    assert not any(block.att.packed for block in model.trf_blocks)
    ids = np.arange(6).reshape(1, 6)
    with tg.no_grad():
        unpacked = model(ids).data
    assert calls["packed"] == 0
    assert for_inference(model) is model
    assert all(block.att.packed for block in model.trf_blocks)
    assert model.trf_blocks[0].att.W_query.weight.dtype == np.float64
    with tg.no_grad():
        np.testing.assert_allclose(model(ids).data, unpacked, rtol=1e-12, atol=1e-12)
    assert calls["packed"] == 2


# --- LoRA -----------------------------------------------------------------------------------------
def _with_lora(module, seed=3):
    tg.manual_seed(seed)
    replace_linear_with_lora(module, rank=2, alpha=4.0)
    rng = np.random.default_rng(seed)
    for _, layer in lora_modules(module):  # B starts at zero; a random B makes the update visible
        layer.B.data = 0.3 * rng.standard_normal(layer.B.shape)
    return module


def test_lora_works_on_both_and_merging_restores_the_packed_product(calls):
    book, fast = _pair(np.float64)
    x = _x((2, 6, 6), np.float64)
    with tg.no_grad():
        base = fast(tg.tensor(x)).data
    _with_lora(book), _with_lora(fast)
    assert not fast.packed                     # W_query etc. are LoRA wrappers now
    assert not fast.pack()                     # and a wrapper is never packed (its update would be lost)
    with tg.no_grad():
        lora_out = fast(tg.tensor(x)).data
    np.testing.assert_allclose(lora_out, book(tg.tensor(x)).data, rtol=1e-12, atol=1e-12)
    assert not np.allclose(lora_out, base)         # the adapters' update is included
    dout = _x((2, 6, 8), np.float64, seed=1)
    _, grads_f, _ = _grads(fast, x, dout)
    _, grads_b, _ = _grads(book, x, dout)
    assert [n for n in grads_b if grads_b[n] is not None] == [n for n in grads_b if ".lora." in n]
    for name in grads_b:
        if grads_b[name] is not None:
            np.testing.assert_allclose(grads_f[name], grads_b[name], rtol=1e-12, atol=1e-12, err_msg=name)
    cache, outs = LayerKVCache(16), []
    with tg.no_grad():
        for a, b in [(0, 4), (4, 5), (5, 6)]:
            outs.append(fast(tg.tensor(x[:, a:b]), kv_cache=cache).data)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), lora_out, rtol=1e-12, atol=1e-12)
    packed_calls = calls["packed"]
    merge_lora(fast)
    assert fast.packed                         # the packed Linears are back, merged in place
    with tg.no_grad():
        np.testing.assert_allclose(fast(tg.tensor(x)).data, lora_out, rtol=1e-12, atol=1e-12)
    assert calls["packed"] == packed_calls + 1


# --- generation and evaluation take the fast route ------------------------------------------------
def test_generation_and_evaluation_use_the_fast_route_and_training_the_book_route(calls):
    cfg = {"vocab_size": 31, "context_length": 12, "emb_dim": 8, "n_heads": 2, "n_layers": 3,
           "drop_rate": 0.1, "qkv_bias": False}
    tg.manual_seed(0)
    model = GPTModel(cfg)
    assert all(type(block.att) is MultiHeadAttention for block in model.trf_blocks)
    ids = np.arange(5).reshape(1, 5)
    generate(model.eval(), ids, 4, 12)             # the book's classes: never the fast route
    assert calls == {"packed": 0, "kernel": 0}
    model = for_inference(model.train())
    assert all(type(block.att) is FastMultiHeadAttention for block in model.trf_blocks)
    model(ids).sum().backward()                    # training: a graph, the book's route
    assert calls == {"packed": 0, "kernel": 0}
    model.eval()
    with tg.no_grad():
        model(ids)                                 # evaluation under no_grad
    assert calls == {"packed": 3, "kernel": 0}
    generate(model, ids, 4, 12)                    # KV cache: prompt + 3 one-token steps
    assert calls == {"packed": 3 + 4 * 3, "kernel": 4 * 3}
