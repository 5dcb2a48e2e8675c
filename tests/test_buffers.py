"""Reused storage for the huge per-step arrays (tinygpt/core/buffers.py): reuse only when idle,
and a training run gives the same numbers with and without it."""
import numpy as np
import pytest

import tinygpt as tg
from tinygpt.core import buffers
from tinygpt.model import GPTModel
from tinygpt.optim import AdamW
from tinygpt.train import calc_loss_batch

T, GROW, ALT, OTHER = (buffers.Slot(n) for n in ("t", "grow", "alt", "other"))
CFG = {"vocab_size": 97, "context_length": 8, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
       "drop_rate": 0.0, "qkv_bias": False}


@pytest.fixture
def pool_everything(monkeypatch):
    """Pool every array, however small, so a tiny model exercises every reuse path."""
    buffers.clear()
    monkeypatch.setattr(buffers, "MIN_BYTES", 0)
    assert buffers.REUSE  # CPython with the GIL: the refcount rule holds here
    yield
    buffers.clear()


@pytest.fixture
def pool_nothing(monkeypatch):
    buffers.clear()
    monkeypatch.setattr(buffers, "MIN_BYTES", 1 << 62)
    yield


def test_small_arrays_are_never_pooled():
    a = buffers.empty(T, (4, 4), np.float32)
    del a
    assert buffers.empty(T, (4, 4), np.float32).shape == (4, 4)
    assert buffers.pooled_bytes() == 0


def test_idle_array_is_reused_and_busy_one_is_not(pool_everything):
    a = buffers.empty(T, (3, 5), np.float64)
    b = buffers.empty(T, (3, 5), np.float64)
    assert a is not b                        # a still referenced
    a_id = id(a)
    del a
    c = buffers.empty(T, (3, 5), np.float64)
    assert id(c) == a_id                     # the idle one came back
    view = c[1:]
    del c
    d = buffers.empty(T, (3, 5), np.float64)
    assert d.base is None and view.base is not d   # a live view keeps its base busy
    assert buffers.empty(T, (3, 5), np.float32).dtype == np.float32  # dtype is part of the key
    assert buffers.empty(OTHER, (3, 5), np.float64) is not d


def test_a_new_shape_forgets_idle_arrays_of_older_shapes(pool_everything):
    """A length that grows each step (generate_text_simple's (T, vocab) logits) keeps two arrays,
    not one per length; two alternating shapes both stay; an array in use is never dropped."""
    for n in range(1, 30):
        a = buffers.empty(GROW, (n, 7), np.float32)
        del a
    assert buffers.pooled_bytes() == (28 + 29) * 7 * 4
    ids = set()
    for n in (5, 6, 5, 6, 5):  # a training batch and a short evaluation batch, alternating
        a = buffers.empty(ALT, (n, 7), np.float32)
        ids.add(id(a))
        del a
    assert len(ids) == 2
    busy = buffers.empty(GROW, (2, 7), np.float32)
    buffers.empty(GROW, (3, 7), np.float32)
    buffers.empty(GROW, (4, 7), np.float32)
    assert busy.shape == (2, 7) and (GROW, (2, 7), "<f4") in buffers._pool


def test_zeros_are_zero_even_when_reused(pool_everything):
    a = buffers.zeros(T, (4, 6), np.float32)
    a += 7
    del a
    assert not buffers.zeros(T, (4, 6), np.float32).any()


def test_pool_size_is_capped(pool_everything, monkeypatch):
    monkeypatch.setattr(buffers, "MAX_POOL_BYTES", 100)
    keep = [buffers.empty(T, (10,), np.float32) for _ in range(4)]  # 40 bytes each
    assert buffers.pooled_bytes() == 80 and len(keep) == 4


def _train(steps, zero_grad=True, keep_grads=False):
    tg.manual_seed(5)
    model = GPTModel(CFG)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, CFG["vocab_size"], (3, 8))
    y = rng.integers(0, CFG["vocab_size"], (3, 8))
    losses, kept = [], []
    for _ in range(steps):
        if zero_grad:
            opt.zero_grad()
        loss = calc_loss_batch(x, y, model)
        loss.backward()
        losses.append(loss.item())
        if keep_grads:  # a user holding on to last step's gradients must see them unchanged
            kept.append([(p.grad, p.grad.copy()) for p in model.parameters()])
        opt.step()
    grads = [p.grad.copy() for p in model.parameters()]
    return losses, grads, [p.data.copy() for p in model.parameters()], kept


@pytest.mark.parametrize("zero_grad", [True, False])
def test_training_is_identical_with_and_without_reuse(request, zero_grad):
    request.getfixturevalue("pool_nothing")
    expected = _train(4, zero_grad)
    request.getfixturevalue("pool_everything")
    got = _train(4, zero_grad, keep_grads=True)
    assert buffers.pooled_bytes() > 0          # the pool was really used
    assert got[0] == expected[0]
    for a, b in zip(got[1] + got[2], expected[1] + expected[2]):
        np.testing.assert_array_equal(a, b)
    for step in got[3]:
        for live, snapshot in step:
            np.testing.assert_array_equal(live, snapshot)


def test_reuse_is_off_where_the_refcount_rule_cannot_hold(pool_everything, monkeypatch):
    assert buffers.refcount_rule_holds("cpython", gil_disabled=False)
    assert not buffers.refcount_rule_holds("pypy", gil_disabled=False)
    assert not buffers.refcount_rule_holds("cpython", gil_disabled=True)   # free-threaded build
    monkeypatch.setattr(buffers, "REUSE", False)
    for _ in range(2):
        assert buffers.empty(T, (3, 5), np.float64).shape == (3, 5)
    assert buffers.pooled_bytes() == 0 and not buffers._pool  # plain np.empty every time


def test_storage_is_asked_for_by_slot():
    with pytest.raises(TypeError, match="Slot"):
        buffers.empty("linear.out", (2, 2), np.float32)
