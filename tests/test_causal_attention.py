"""The blocked causal attention (kernels/causal_attention.py, F.causal_attention in ops/attention.py)
and the fast twins that use it: both kernels against PyTorch (float32 and float64, dropout on and
off, grouped-query heads, lengths that are not a multiple of the block, a prompt after a cache,
1 and 2 threads), the op against the book's composed ops with the same seed, its errors, and
training steps of GPTModel with the twins equal to the book classes' steps.

Kernel-backed: `.ci/run` also runs this file under TINYGPT_KERNELS=numpy (the op on the NumPy
reference); the kernel tests call both implementations whatever the backend."""
import numpy as np
import pytest
import torch

import tinygpt as tg
import tinygpt.kernels as K
import tinygpt.nn.functional as F
from helpers import tolerance
from tinygpt.errors import TinyGPTError
from tinygpt.kernels import causal_attention as CA
from tinygpt.kernels.dropout import dropout_mask_ref
from tinygpt.model import (FastMultiHeadAttention, GPTModel, LayerKVCache, MultiHeadAttention,
                           for_inference, sliding_window_attention)
from tinygpt.ops.modern import grouped_query_attention

DTYPES = [np.float32, np.float64]
# (b, H, G, T, L, hd): odd lengths around the block of 64 queries, GQA, T < L (a prompt after a cache)
SHAPES = [(2, 4, 4, 70, 70, 8), (1, 4, 2, 5, 9, 4), (2, 6, 3, 130, 133, 16), (1, 2, 1, 1, 1, 4),
          (1, 2, 2, 64, 64, 3)]
ROUTES = [("numpy", 1), ("numba", 1), ("numba", 2)]


def _arrays(shape, dtype, seed=0):
    b, h, g, t, L, hd = shape
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in ((b, h, t, hd), (b, g, L, hd), (b, g, L, hd))]


def torch_attention(q, k, v, keep=None, p=0.0):
    """The composed computation in torch: (b, H, T, hd) context and the rows' log-sum-exp."""
    h, g = q.shape[1], k.shape[1]
    k, v = k.repeat_interleave(h // g, dim=1), v.repeat_interleave(h // g, dim=1)
    t, L = q.shape[2], k.shape[2]
    s = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    s = s.masked_fill(torch.triu(torch.ones(t, L, dtype=torch.bool), diagonal=L - t + 1), float("-inf"))
    w = s.softmax(-1)
    if keep is not None:
        w = w * keep / (1.0 - p)
    return w @ v, torch.logsumexp(s, -1)


def _kernels(route, monkeypatch):
    backend, threads = route
    impl = K.REFERENCE if backend == "numpy" else K.NUMBA
    old = K.num_threads()
    K.set_num_threads(threads)
    if threads > 1:
        monkeypatch.setattr(CA, "MIN_FLOPS", 1)  # split even these tiny calls into several chunks
    return impl["causal_attention_forward"], impl["causal_attention_backward"], old


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_matches_torch(route, p, shape, dtype, monkeypatch):
    fwd, bwd, old = _kernels(route, monkeypatch)
    try:
        q, k, v = _arrays(shape, dtype)
        b, h, g, t, L, hd = shape
        scale, seed = 1.0 / hd ** 0.5, 12345
        out, lse = fwd(q, k, v, scale, p, seed)
        assert out.shape == (b, t, h, hd) and lse.shape == (b, h, t)
        assert out.dtype == lse.dtype == dtype
        dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
        grads = bwd(q, k, v, out, lse, dout, scale, p, seed)
    finally:
        K.set_num_threads(old)
    keep = torch.from_numpy(dropout_mask_ref(b * h * t * L, p, seed).reshape(b, h, t, L)) if p else None
    tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
    want, want_lse = torch_attention(tq, tk, tv, keep, p)
    (want * torch.from_numpy(dout).transpose(1, 2)).sum().backward()
    tol = tolerance("kernel", dtype)
    np.testing.assert_allclose(out.transpose(0, 2, 1, 3), want.detach().numpy(), **tol)
    np.testing.assert_allclose(lse, want_lse.detach().numpy(), **tol)
    for name, got, t_in in zip("qkv", grads, (tq, tk, tv)):
        assert got.shape == t_in.shape and got.dtype == dtype, name
        np.testing.assert_allclose(got, t_in.grad.numpy(), err_msg=name, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_matches_torch_scaled_dot_product_attention(dtype):
    q, k, v = _arrays((2, 8, 2, 67, 67, 16), dtype, seed=3)
    out, _ = K.causal_attention_forward(q, k, v, 0.25, 0.0, 0)
    want = torch.nn.functional.scaled_dot_product_attention(
        *(torch.from_numpy(a) for a in (q, k, v)), is_causal=True, enable_gqa=True)
    np.testing.assert_allclose(out.transpose(0, 2, 1, 3), want.numpy(), **tolerance("kernel", dtype))


def _composed(q, k, v, p):
    """The book's route: MultiHeadAttention's three lines (G = H) or grouped_query_attention."""
    if k.shape[1] != q.shape[1]:
        return grouped_query_attention(q, k, v, p)
    weights = F.scaled_causal_softmax(q @ k.transpose(2, 3), 1.0 / k.shape[-1] ** 0.5, p)
    return weights @ v


@pytest.mark.parametrize("shape", [(2, 4, 4, 70, 73, 8), (1, 6, 2, 9, 9, 4)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_op_drops_what_the_composed_ops_drop(shape, dtype):
    """Same manual_seed: the same weights dropped, so outputs and gradients agree to rounding."""
    arrays = _arrays(shape, dtype, seed=5)
    dout = tg.tensor(np.random.default_rng(6).standard_normal(shape[:2] + (shape[3], shape[5])).astype(dtype))
    results = []
    for fn in (F.causal_attention, _composed):
        q, k, v = (tg.tensor(a, requires_grad=True) for a in arrays)
        tg.manual_seed(7)
        out = fn(q, k, v, 0.4)
        (out * dout).sum().backward()
        results.append([out.data, q.grad, k.grad, v.grad])
    tol = tolerance("op", dtype)
    assert results[0][0].shape == results[1][0].shape and results[0][0].dtype == dtype
    for name, got, want in zip(["out", "dq", "dk", "dv"], *results):
        np.testing.assert_allclose(got, want, err_msg=name, **tol)
    assert (results[0][0] == 0).any()  # dropout did drop something


@pytest.mark.parametrize("args,match", [
    (((2, 3, 4), (2, 3, 4), (2, 3, 4)), "4-D|head_dim"),
    (((1, 4, 5, 8), (1, 3, 5, 8), (1, 3, 5, 8)), "dividing"),
    (((1, 4, 5, 8), (1, 2, 5, 8), (1, 2, 6, 8)), "one shape"),
    (((1, 4, 5, 8), (1, 2, 5, 4), (1, 2, 5, 4)), "head_dim"),
    (((2, 4, 5, 8), (1, 2, 5, 8), (1, 2, 5, 8)), "b=2"),
    (((1, 2, 6, 8), (1, 2, 5, 8), (1, 2, 5, 8)), "at least as many keys"),
])
def test_bad_shapes_are_named(args, match):
    with pytest.raises(TinyGPTError, match=match):
        F.causal_attention(*(np.zeros(s, np.float32) for s in args))


def test_bad_dtypes_and_probability_are_named():
    q = np.zeros((1, 2, 3, 4), np.float32)
    with pytest.raises(TinyGPTError, match="dtypes differ"):
        F.causal_attention(q, q.astype(np.float64), q)
    with pytest.raises(TinyGPTError, match="float32/float64"):
        F.causal_attention(q.astype(np.int64), q, q)
    with pytest.raises(TinyGPTError, match=r"\[0, 1\]"):
        F.causal_attention(q, q, q, dropout_p=1.5)


@pytest.fixture
def op_calls(monkeypatch):
    seen = []
    fwd = K.causal_attention_forward

    def spy(q, k, v, *rest):
        seen.append((q.shape, k.shape))
        return fwd(q, k, v, *rest)
    monkeypatch.setattr(K, "causal_attention_forward", spy)
    return seen


@pytest.mark.parametrize("dtype", DTYPES)
def test_prompt_after_a_cache_takes_the_blocked_kernel(dtype, op_calls):
    """A 20-token prompt (more than DECODE_TOKENS) after 3 cached tokens: T = 20 queries against
    L = 23 keys, equal to the book class over the same cache."""
    tg.manual_seed(2)
    book = MultiHeadAttention(8, 12, 32, 0.0, 3, qkv_bias=True).to(dtype)
    fast = FastMultiHeadAttention.from_book(MultiHeadAttention(8, 12, 32, 0.0, 3, qkv_bias=True).to(dtype))
    fast.load_state_dict(book.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 23, 8)).astype(dtype)
    outs = []
    with tg.no_grad():
        for module in (book, fast):
            cache = LayerKVCache(32)
            module(tg.tensor(x[:, :3]), kv_cache=cache)
            outs.append(module(tg.tensor(x[:, 3:]), kv_cache=cache).data)
    assert op_calls == [((2, 3, 20, 4), (2, 3, 23, 4))]
    np.testing.assert_allclose(outs[1], outs[0], **tolerance("op", dtype))


TINY = {"vocab_size": 50, "context_length": 80, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
        "drop_rate": 0.2, "qkv_bias": False}


def _train(model, batches, dtype):
    opt = tg.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.1)
    tg.manual_seed(11)  # the dropout masks of every step come from here
    losses = []
    for inputs, targets in batches:
        opt.zero_grad()
        logits = model(tg.tensor(inputs))
        loss = F.cross_entropy(logits.flatten(0, 1), tg.tensor(targets.flatten()))
        loss.backward()
        opt.step()
        losses.append(float(loss.data))
    return losses, {n: p.data.copy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", DTYPES)
def test_training_steps_with_the_twins_equal_the_book_classes(dtype, op_calls):
    """Three AdamW steps, dropout on (embeddings, attention weights, shortcuts), 67 tokens (not a
    multiple of the block): the twins' losses and weights equal the book classes' to rounding."""
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 50, (2, 67)), rng.integers(0, 50, (2, 67))) for _ in range(3)]
    runs = []
    for swap in (False, True):
        tg.manual_seed(123)
        model = GPTModel(TINY).to(dtype).train()
        runs.append(_train(for_inference(model) if swap else model, batches, dtype))
    assert len(op_calls) == 3 * TINY["n_layers"]  # every attention layer of every step
    (book_losses, book_w), (fast_losses, fast_w) = runs
    rtol = 1e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(fast_losses, book_losses, rtol=rtol)
    for name in book_w:
        np.testing.assert_allclose(fast_w[name], book_w[name], rtol=rtol, atol=rtol * 1e-1, err_msg=name)


@pytest.mark.parametrize("window", [1, 4, 70])
@pytest.mark.parametrize("dtype", DTYPES)
def test_window_equals_gemma3_sliding_window_attention(window, dtype):
    """Sliding-window attention (issue 42): each query sees its last `window` keys; with Gemma's
    own scale, outputs and gradients equal gemma3.py's composed `sliding_window_attention`."""
    arrays = _arrays((2, 4, 2, 69, 75, 8), dtype, seed=8)
    dout = tg.tensor(np.random.default_rng(9).standard_normal((2, 4, 69, 8)).astype(dtype))
    results = []
    for fn in (lambda q, k, v: F.causal_attention(q, k, v, window=window, scale=0.3),
               lambda q, k, v: sliding_window_attention(q, k, v, 0.3, window)):
        q, k, v = (tg.tensor(a, requires_grad=True) for a in arrays)
        out = fn(q, k, v)
        (out * dout).sum().backward()
        results.append([out.data, q.grad, k.grad, v.grad])
    for name, got, want in zip(["out", "dq", "dk", "dv"], *results):
        np.testing.assert_allclose(got, want, err_msg=name, **tolerance("op", dtype))
    with pytest.raises(TinyGPTError, match="window"):
        F.causal_attention(*arrays, window=0)


@pytest.mark.parametrize("route", ROUTES[1:])
@pytest.mark.parametrize("window", [1, 5, 64])
def test_window_kernel_matches_reference(route, window, monkeypatch):
    """The Numba kernel's skipped blocks and row starts against the NumPy reference's mask."""
    fwd, bwd, old = _kernels(route, monkeypatch)
    q, k, v = _arrays((2, 6, 3, 130, 141, 8), np.float64, seed=10)
    try:
        out, lse = fwd(q, k, v, 0.35, 0.2, 77, window)
        dout = np.random.default_rng(11).standard_normal(out.shape)
        grads = bwd(q, k, v, out, lse, dout, 0.35, 0.2, 77, window)
    finally:
        K.set_num_threads(old)
    ref_out, ref_lse = K.REFERENCE["causal_attention_forward"](q, k, v, 0.35, 0.2, 77, window)
    ref_grads = K.REFERENCE["causal_attention_backward"](q, k, v, ref_out, ref_lse, dout, 0.35, 0.2, 77, window)
    tol = tolerance("kernel", np.float64)
    for name, got, want in zip(["out", "lse", "dq", "dk", "dv"], (out, lse, *grads), (ref_out, ref_lse, *ref_grads)):
        np.testing.assert_allclose(got, want, err_msg=name, **tol)
