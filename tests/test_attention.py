"""Chapter-3 attention modules against the PyTorch twin (tests/reference/torch_gpt.py): outputs,
the loss and every gradient by name, float32 and float64; state dicts; dropout; the KV cache.
FastMultiHeadAttention, what `for_inference` swaps in, is checked against these in
test_fast_attention.py."""
import numpy as np
import pytest
import torch
from reference import torch_gpt as ref

import tinygpt as tg
from tinygpt.model import (
    CausalAttention,
    LayerKVCache,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttention_v1,
    SelfAttention_v2,
)

DTYPES = [np.float32, np.float64]


def _inputs(shape, n_classes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    targets = rng.integers(0, n_classes, size=shape[:-1]).astype(np.int64)
    return x, targets


def _build(cls, dtype, *args, **kwargs):
    tg.manual_seed(1)
    return cls(*args, **kwargs).to(dtype)


# --- agreement with the twin --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_self_attention_v1_matches_torch(dtype):
    # the book's 6x3 "Your journey starts with one step" shape; U(0, 1) weights as in the book
    module = _build(SelfAttention_v1, dtype, 3, 2)
    x, targets = _inputs((6, 3), 2, dtype)
    ref.assert_matches_torch(module, ref.SelfAttention_v1(3, 2), x, targets, "SelfAttention_v1")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_self_attention_v2_matches_torch(dtype, qkv_bias):
    module = _build(SelfAttention_v2, dtype, 5, 7, qkv_bias=qkv_bias)
    x, targets = _inputs((6, 5), 7, dtype)
    ref.assert_matches_torch(module, ref.SelfAttention_v2(5, 7, qkv_bias), x, targets,
                             "SelfAttention_v2")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("batch,tokens", [(1, 16), (3, 5)])  # 16 = the full context length
def test_causal_attention_matches_torch(dtype, qkv_bias, batch, tokens):
    module = _build(CausalAttention, dtype, 6, 5, 16, 0.0, qkv_bias=qkv_bias)
    x, targets = _inputs((batch, tokens, 6), 5, dtype)
    ref.assert_matches_torch(module, ref.CausalAttention(6, 5, 16, 0.0, qkv_bias), x, targets,
                             "CausalAttention")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,tokens", [(1, 16), (2, 7)])
def test_multihead_attention_wrapper_matches_torch(dtype, batch, tokens):
    module = _build(MultiHeadAttentionWrapper, dtype, 6, 3, 16, 0.0, num_heads=3, qkv_bias=True)
    x, targets = _inputs((batch, tokens, 6), 9, dtype)
    twin = ref.MultiHeadAttentionWrapper(6, 3, 16, 0.0, num_heads=3, qkv_bias=True)
    ref.assert_matches_torch(module, twin, x, targets, "MultiHeadAttentionWrapper")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("d_in,d_out,heads", [(24, 24, 4), (8, 15, 3), (6, 14, 2), (5, 5, 1)])
@pytest.mark.parametrize("batch,tokens", [(1, 16), (2, 9)])
def test_multihead_attention_matches_torch(dtype, qkv_bias, d_in, d_out, heads, batch, tokens):
    # head dims 6, 5 and 7 (odd), a single head, batch 1 at the full context length 16
    module = _build(MultiHeadAttention, dtype, d_in, d_out, 16, 0.0, heads, qkv_bias=qkv_bias)
    x, targets = _inputs((batch, tokens, d_in), d_out, dtype)
    twin = ref.MultiHeadAttention(d_in, d_out, 16, 0.0, heads, qkv_bias)
    ref.assert_matches_torch(module, twin, x, targets, f"MultiHeadAttention {d_out}/{heads}")


def test_multihead_attention_accepts_noncontiguous_input():
    module = _build(MultiHeadAttention, np.float64, 6, 6, 16, 0.0, 2)
    x, targets = _inputs((8, 2, 6), 6, np.float64)
    x_t = np.swapaxes(x, 0, 1)  # (2, 8, 6) view with odd strides
    got = module(tg.tensor(x_t)).data
    ref.copy_tinygpt_to_torch(module, twin := ref.MultiHeadAttention(6, 6, 16, 0.0, 2))
    want = twin(torch.from_numpy(np.ascontiguousarray(x_t))).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


# --- state dicts ----------------------------------------------------------------------------------
MODULES = {
    "SelfAttention_v1": (SelfAttention_v1, ref.SelfAttention_v1, (3, 2), {}),
    "SelfAttention_v2": (SelfAttention_v2, ref.SelfAttention_v2, (3, 2), {"qkv_bias": True}),
    "CausalAttention": (CausalAttention, ref.CausalAttention, (3, 2, 6, 0.0), {}),
    "MultiHeadAttentionWrapper": (MultiHeadAttentionWrapper, ref.MultiHeadAttentionWrapper,
                                  (3, 2, 6, 0.0, 2), {}),
    "MultiHeadAttention": (MultiHeadAttention, ref.MultiHeadAttention, (3, 4, 6, 0.0, 2),
                           {"qkv_bias": True}),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_state_dict_names_and_shapes_equal_torch(name):
    ours_cls, twin_cls, args, kwargs = MODULES[name]
    ours = ours_cls(*args, **kwargs).state_dict()
    theirs = twin_cls(*args, **kwargs).state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.items()] == \
           [(k, tuple(v.shape)) for k, v in theirs.items()]


@pytest.mark.parametrize("name", list(MODULES))
def test_state_dict_round_trip_through_torch_is_exact(name):
    ours_cls, twin_cls, args, kwargs = MODULES[name]
    torch.manual_seed(0)
    twin = twin_cls(*args, **kwargs)
    ours = ours_cls(*args, **kwargs)
    ours.load_state_dict(ref.to_numpy_state_dict(twin))        # torch -> tinygpt (strict)
    back = twin_cls(*args, **kwargs)
    back.load_state_dict(ref.to_torch_state_dict(ours.state_dict()), strict=True)  # and back
    for key, value in twin.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
        assert np.array_equal(ours.state_dict()[key], value.numpy()), key


def test_load_state_dict_rejects_a_wrong_mask_and_accepts_none():
    module = MultiHeadAttention(4, 4, 6, 0.0, 2)
    sd = dict(module.state_dict())
    module.load_state_dict(module.state_dict(masks=False))     # masks are optional
    sd["mask"] = np.zeros((6, 6), np.float32)
    with pytest.raises(ValueError, match="mask"):
        module.load_state_dict(sd)


# --- the book's shape ------------------------------------------------------------------------------
def test_multihead_attention_is_three_independent_linear_layers():
    """The book's listing: W_query, W_key and W_value are plain Linear layers with weights of their
    own (no hidden storage behind them); the fast route lives in FastMultiHeadAttention."""
    module = MultiHeadAttention(6, 8, 16, 0.0, 2, qkv_bias=True)
    for name in ("W_query", "W_key", "W_value", "out_proj"):
        layer = getattr(module, name)
        assert type(layer) is tg.nn.Linear, name
        assert layer.weight.data.base is None and layer.bias.data.base is None, name
    assert [n for n, _ in module.named_parameters()] == [
        f"{layer}.{p}" for layer in ("W_query", "W_key", "W_value", "out_proj")
        for p in ("weight", "bias")]


# --- causality, dropout, errors -------------------------------------------------------------------
@pytest.mark.parametrize("cls", [CausalAttention, MultiHeadAttention])
def test_future_tokens_do_not_change_earlier_outputs(cls):
    args = (4, 6, 8, 0.0) + ((3,) if cls is MultiHeadAttention else ())
    module = _build(cls, np.float64, *args)
    x, _ = _inputs((2, 8, 4), 2, np.float64)
    x2 = x.copy()
    x2[:, 5:] += 1.0
    a, b = module(tg.tensor(x)).data, module(tg.tensor(x2)).data
    np.testing.assert_array_equal(a[:, :5], b[:, :5])
    assert not np.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("cls", [CausalAttention, MultiHeadAttention])
def test_attention_dropout_train_eval_and_seeded(cls):
    args = (4, 6, 8, 0.5) + ((3,) if cls is MultiHeadAttention else ())
    module = _build(cls, np.float32, *args)
    x = tg.tensor(_inputs((2, 8, 4), 2, np.float32)[0])
    tg.manual_seed(7)
    a = module(x).data
    b = module(x).data
    tg.manual_seed(7)
    assert np.array_equal(module(x).data, a)                   # seeded run reproduces
    assert not np.allclose(a, b)                               # dropout active in train()
    module.eval()
    c, d = module(x).data, module(x).data
    assert np.array_equal(c, d)
    module.dropout.p = 0.0
    module.train()
    assert np.array_equal(module(x).data, c)                   # eval() == no dropout


@pytest.mark.parametrize("cls", [CausalAttention, MultiHeadAttention])
def test_too_many_tokens_is_a_clear_error(cls):
    args = (4, 6, 8, 0.0) + ((3,) if cls is MultiHeadAttention else ())
    module = cls(*args)
    with pytest.raises(ValueError, match=r"9 tokens.*context_length is 8"):
        module(tg.tensor(np.zeros((1, 9, 4), np.float32)))


def test_head_split_must_divide():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(4, 10, 8, 0.0, 3)


# --- KV cache -------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunks", [[8], [1] * 8, [3, 1, 4], [5, 3]])
def test_kv_cache_chunks_equal_the_full_forward(chunks):
    module = _build(MultiHeadAttention, np.float64, 4, 6, 8, 0.0, 3, qkv_bias=True)
    x, _ = _inputs((2, 8, 4), 2, np.float64)
    full = module(tg.tensor(x)).data
    cache, outs, start = LayerKVCache(8), [], 0
    with tg.no_grad():
        for n in chunks:
            outs.append(module(tg.tensor(x[:, start:start + n]), kv_cache=cache).data)
            start += n
    assert cache.length == 8
    np.testing.assert_allclose(np.concatenate(outs, axis=1), full, rtol=1e-12, atol=1e-12)


def test_kv_cache_needs_no_grad_and_reports_overflow():
    module = MultiHeadAttention(4, 4, 8, 0.0, 2)
    cache = LayerKVCache(8)
    with pytest.raises(RuntimeError, match="no_grad"):
        module(tg.tensor(np.zeros((1, 2, 4), np.float32)), kv_cache=cache)
    with tg.no_grad():
        module(tg.tensor(np.zeros((1, 6, 4), np.float32)), kv_cache=cache)
        with pytest.raises(ValueError, match=r"6 cached \+ 3 new"):
            module(tg.tensor(np.zeros((1, 3, 4), np.float32)), kv_cache=cache)
