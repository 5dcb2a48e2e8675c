"""The ops of Qwen3 and Llama 3 (tinygpt/ops/modern.py) beyond the one-case floor of
test_every_op.py: grouped-query attention against PyTorch (its gradients too), RoPE tables against
the book's `compute_rope_params`, the KV-cache offset, and RMSNorm/SiLU over many shapes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings, strategies as st

import tinygpt as tg
from helpers import assert_close, check_op, fd_check, tolerance
from strategies import fixed_array
from tinygpt.ops import grouped_query_attention, rms_norm, rope, rope_tables, silu
book_llama3 = pytest.importorskip("llms_from_scratch.llama3")  # the book's package: pip install --no-deps llms-from-scratch
book_qwen3 = pytest.importorskip("llms_from_scratch.qwen3")

LLAMA_FREQ = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_context_length": 8192}


def torch_gqa(q, k, v):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    t, n = q.shape[2], k.shape[2]
    mask = torch.triu(torch.ones(t, n, dtype=torch.bool), diagonal=n - t + 1)
    scores = (q @ k.transpose(2, 3)).masked_fill(mask, float("-inf"))
    return torch.softmax(scores / q.shape[-1] ** 0.5, dim=-1) @ v


@pytest.mark.parametrize("heads,groups,t,n", [(4, 2, 5, 5), (6, 3, 2, 7), (4, 1, 3, 3), (2, 2, 1, 4)])
def test_grouped_query_attention_against_torch(heads, groups, t, n):
    for dtype in (np.float32, np.float64):
        inputs = [fixed_array((2, heads, t, 8), dtype, "real", 0),
                  fixed_array((2, groups, n, 8), dtype, "real", 1),
                  fixed_array((2, groups, n, 8), dtype, "real", 2)]
        check_op(grouped_query_attention, torch_gqa, inputs, name=f"gqa {heads}/{groups}")
    fd_check(grouped_query_attention, [fixed_array((1, heads, t, 4), np.float64, "real", s)
                                       if i == 0 else fixed_array((1, groups, n, 4), np.float64, "real", s)
                                       for i, s in enumerate((3, 4, 5))], name="gqa")


def test_grouped_query_attention_never_repeats_keys():
    """The keys and values reach the product with their G heads, not H: the graph holds no
    (b, H, L, hd) array of them."""
    q = tg.Tensor(fixed_array((1, 8, 3, 4), np.float32, "real", 0), requires_grad=True)
    k = tg.Tensor(fixed_array((1, 2, 5, 4), np.float32, "real", 1), requires_grad=True)
    out = grouped_query_attention(q, k, k)  # 3 new queries over 5 keys, as in a cached decode
    stack, shapes = [out], set()
    while stack:
        t = stack.pop()
        shapes.add(t.shape)
        stack.extend(t._ctx.parents if t._ctx is not None else [])
    assert not any(s[-2:] == (5, 4) and np.prod(s) > k.size for s in shapes), shapes


@pytest.mark.parametrize("book,freq", [(book_qwen3, None), (book_llama3, LLAMA_FREQ)])
def test_rope_tables_match_the_book(book, freq):
    kwargs = {} if freq is None else {"freq_config": freq}
    cos_b, sin_b = book.compute_rope_params(head_dim=64, theta_base=500_000.0, context_length=300, **kwargs)
    cos, sin = rope_tables(64, 500_000.0, 300, freq)
    # the book computes the angles in float32, we in float64: the angles differ by float32 rounding
    # of position * inv_freq (up to ~300 * 2**-24 rad), which bounds the difference of cos and sin
    np.testing.assert_allclose(cos, cos_b.numpy(), rtol=0, atol=3e-5)
    np.testing.assert_allclose(sin, sin_b.numpy(), rtol=0, atol=3e-5)


def test_rope_offset_is_the_slice_of_the_whole_sequence():
    """What the KV cache relies on: rotating tokens 3..5 alone at offset 3 equals rotating all six
    tokens and keeping the last three."""
    cos, sin = rope_tables(8, 10_000.0, 10, LLAMA_FREQ, np.float64)
    x = fixed_array((1, 2, 6, 8), np.float64, "real", 0)
    whole = rope(x, cos, sin).data
    tail = rope(x[:, :, 3:], cos, sin, offset=3).data
    np.testing.assert_array_equal(tail, whole[:, :, 3:])


def test_grouped_query_attention_refuses_shapes_that_do_not_group():
    q = np.zeros((1, 4, 3, 8), np.float32)
    for k in (np.zeros((1, 3, 3, 8), np.float32), np.zeros((1, 2, 3, 6), np.float32),
              np.zeros((2, 2, 3, 8), np.float32), np.zeros((2, 3, 8), np.float32)):
        with pytest.raises(tg.errors.InputError, match="grouped_query_attention"):
            grouped_query_attention(q, k, k)


def test_rope_refuses_positions_outside_the_tables():
    cos, sin = rope_tables(8, 10_000.0, 4)
    with pytest.raises(tg.errors.InputError, match="outside the tables"):
        rope(np.zeros((1, 1, 3, 8), np.float32), cos, sin, offset=2)
    with pytest.raises(tg.errors.InputError, match="even head_dim"):
        rope(np.zeros((1, 1, 3, 6), np.float32), cos, sin)


@settings(max_examples=20)
@given(rows=st.integers(1, 6), d=st.integers(1, 40), dtype=st.sampled_from([np.float32, np.float64]),
       eps=st.sampled_from([1e-6, 1e-5]))
def test_rms_norm_against_torch(rows, d, dtype, eps):
    inputs = [fixed_array((rows, d), dtype, "real", 0), fixed_array((d,), dtype, "real", 1)]
    check_op(lambda x, w: rms_norm(x, w, eps), lambda x, w: TF.rms_norm(x, (d,), w, eps=eps),
             inputs, name="rms_norm")


def test_rms_norm_refuses_a_wrong_scale():
    with pytest.raises(tg.errors.InputError, match="scale of shape"):
        rms_norm(np.ones((2, 4), np.float32), np.ones(3, np.float32))
    with pytest.raises(tg.errors.InputTypeError, match="dtypes differ"):
        rms_norm(np.ones((2, 4), np.float32), np.ones(4, np.float64))


def test_silu_is_finite_at_the_extremes():
    x = np.array([-1e4, -100.0, -1.0, 0.0, 1.0, 100.0, 1e4], np.float32)
    t = tg.Tensor(x, requires_grad=True)
    y = silu(t)
    y.sum().backward()
    want = TF.silu(torch.from_numpy(x))
    assert_close(y.data, want.numpy(), what="silu", tol=tolerance("op", np.float32))
    assert np.isfinite(t.grad).all()
