"""The models a user builds are made of the book's classes (each weight its own array), and
`tinygpt.model.for_inference` is the one step that swaps in the fast layers: same parameters,
names and tokens, the fast kernels actually taken, memory packed layer by layer, training
unchanged."""
import itertools
import tracemalloc

import numpy as np
import pytest
from modern_models import TINY_LLAMA, TINY_QWEN3, randomize_norms, tokens

import tinygpt as tg
import tinygpt.kernels as kernels
from tinygpt.model import (FastMultiHeadAttention, GPTModel, Llama3Model, MultiHeadAttention,
                           Qwen3Model, RMSNorm, for_inference, generate)
from tinygpt.model import modern
from tinygpt.model.fast_modern import FastFeedForward, FastGroupedQueryAttention
from tinygpt.model.packing import PackedLinears
from helpers import tolerance

TINY_GPT = {"vocab_size": 40, "context_length": 24, "emb_dim": 16, "n_heads": 4, "n_layers": 2,
            "drop_rate": 0.0, "qkv_bias": True}
MODELS = {"gpt": (GPTModel, TINY_GPT), "qwen3": (Qwen3Model, TINY_QWEN3),
          "llama": (Llama3Model, TINY_LLAMA)}
BOOK = {"gpt": (MultiHeadAttention, None), "qwen3": (modern.GroupedQueryAttention, modern.FeedForward),
        "llama": (modern.GroupedQueryAttention, modern.FeedForward)}
FAST = {"gpt": (FastMultiHeadAttention, None), "qwen3": (FastGroupedQueryAttention, FastFeedForward),
        "llama": (FastGroupedQueryAttention, FastFeedForward)}


def build(kind, dtype=np.float64, seed=3, **cfg):
    cls, base = MODELS[kind]
    tg.manual_seed(seed)
    model = cls({**base, **cfg}).to(dtype)
    return randomize_norms(model) if kind != "gpt" else model


def layer_types(model):
    return [(type(b.att), type(b.ff) if not isinstance(model, GPTModel) else None)
            for b in model.trf_blocks]


@pytest.fixture
def spy(monkeypatch):
    """Calls of the cached-attention kernel (new tokens per call) and of the packed products."""
    seen = {"kernel": [], "packed": 0}
    kernel, product = kernels.cached_attention, PackedLinears.__call__

    def kernel_spy(*args):
        seen["kernel"].append(1)
        return kernel(*args)

    def product_spy(self, x):
        seen["packed"] += 1
        return product(self, x)
    monkeypatch.setattr(kernels, "cached_attention", kernel_spy)
    monkeypatch.setattr(PackedLinears, "__call__", product_spy)
    return seen


# --- what a user builds -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", MODELS)
def test_a_constructed_model_is_made_of_the_book_classes_each_weight_its_own(kind):
    model = build(kind, np.float32, tie_weights=True)
    assert layer_types(model) == [BOOK[kind]] * model.cfg["n_layers"]
    if kind != "gpt":
        norms = [m for m in model.modules() if "norm" in type(m).__name__.lower()]
        assert norms and all(type(m) is RMSNorm for m in norms)
    params = model.parameters()  # a tied weight is one Parameter, listed once
    assert len(params) == len({id(p.data) for p in params})
    for (i, a), (j, b) in itertools.combinations(enumerate(params), 2):
        assert not np.shares_memory(a.data, b.data), (i, j)
    assert model.weights_tied


@pytest.mark.parametrize("kind", MODELS)
def test_to_casts_without_repacking(kind):
    model = build(kind, np.float32)
    ids = tokens(model.cfg, batch=1, length=5)
    with tg.no_grad():
        want = model(ids).data.astype(np.float64)
    model.to(np.float64)
    assert {p.dtype for p in model.parameters()} == {np.dtype(np.float64)}
    assert layer_types(model) == [BOOK[kind]] * model.cfg["n_layers"]
    with tg.no_grad():
        np.testing.assert_allclose(model(ids).data, want, rtol=1e-4, atol=1e-5)


# --- for_inference --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", MODELS)
def test_for_inference_swaps_in_place_keeping_parameters_and_names(kind):
    model = build(kind)
    names = list(model.state_dict())
    params = dict(model.named_parameters())
    assert for_inference(model) is model
    assert layer_types(model) == [FAST[kind]] * model.cfg["n_layers"]
    assert list(model.state_dict()) == names
    assert all(p is params[n] for n, p in model.named_parameters())
    assert all(block.att.packed for block in model.trf_blocks)
    packed_storage = model.trf_blocks[0].att.W_query.weight.data.base
    assert np.shares_memory(packed_storage, model.trf_blocks[0].att.W_value.weight.data)
    assert for_inference(model) is model              # again: nothing to do
    assert model.trf_blocks[0].att.W_query.weight.data.base is packed_storage


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_and_greedy_tokens_equal_the_book_model_and_the_kernel_runs(kind, dtype, spy):
    book = build(kind, dtype).eval()
    fast = for_inference(build(kind, dtype)).eval()
    ids = tokens(book.cfg, batch=2, length=6)
    with tg.no_grad():
        want = book(ids).data
    assert spy == {"kernel": [], "packed": 0}       # the book's classes never take the fast route
    book_tokens = {c: generate(book, ids[:1], 12, book.cfg["context_length"], use_cache=c)
                   for c in (True, False)}
    assert spy == {"kernel": [], "packed": 0}
    with tg.no_grad():
        got = fast(ids).data
    tol = tolerance("model", dtype)
    np.testing.assert_allclose(got, want, rtol=tol["rtol"], atol=tol["atol"] * np.abs(want).max())
    for use_cache in (True, False):
        spy["kernel"].clear()
        got_tokens = generate(fast, ids[:1], 12, book.cfg["context_length"], use_cache=use_cache)
        np.testing.assert_array_equal(got_tokens, book_tokens[use_cache], err_msg=f"{use_cache=}")
        np.testing.assert_array_equal(got_tokens, book_tokens[True])
        # with the cache: one kernel call per layer and step (the prompt, then 11 one-token steps)
        assert len(spy["kernel"]) == (12 * fast.cfg["n_layers"] if use_cache else 0)
    assert spy["packed"] > 0


@pytest.mark.parametrize("kind", MODELS)
def test_training_after_for_inference_is_the_book_models(kind, spy):
    book, fast = build(kind).train(), for_inference(build(kind)).train()
    ids = tokens(book.cfg, batch=2, length=7)
    grads = []
    for model in (book, fast):
        model(ids).sum().backward()                # a recorded graph: each Linear runs itself
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert spy == {"kernel": [], "packed": 0}
    assert list(grads[0]) == list(grads[1])
    tol = tolerance("model", np.float64)           # the blocked attention kernel's summation order
    scale = max(np.abs(g).max() for g in grads[0].values())  # (W_key.bias's gradient is 0 + rounding)
    for name in grads[0]:
        np.testing.assert_allclose(grads[1][name], grads[0][name], rtol=tol["rtol"],
                                   atol=tol["atol"] * scale, err_msg=name)


@pytest.mark.parametrize("kind", ["gpt", "qwen3"])
def test_for_inference_packs_layer_by_layer(kind):
    """Peak extra memory while packing stays under 0.2x the weights: each layer frees its own
    arrays as its packed array takes their place (all at once would hold every group twice)."""
    tracemalloc.start()                            # traces the weights' arrays as they are made
    try:
        model = build(kind, np.float32, n_layers=8, emb_dim=64,
                      **({"head_dim": 16} if kind == "qwen3" else {}))
        weights = sum(p.data.nbytes for p in model.parameters())
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for_inference(model)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(block.att.packed for block in model.trf_blocks)
    assert sum(p.data.nbytes for p in model.parameters()) == weights
    assert abs(after - before) < 0.05 * weights     # the separate arrays were freed
    assert peak - before < 0.2 * weights, (peak - before, weights)


def test_a_single_layer_becomes_its_twin_and_a_subclass_is_left_alone():
    tg.manual_seed(0)
    att = MultiHeadAttention(6, 8, 16, 0.0, 2, qkv_bias=True)
    params = att.parameters()
    fast = for_inference(att)
    assert type(fast) is FastMultiHeadAttention and fast.packed
    assert all(a is b for a, b in zip(fast.parameters(), params))

    class MyAttention(MultiHeadAttention):
        pass
    mine = MyAttention(6, 8, 16, 0.0, 2)
    holder = tg.nn.Sequential(mine)
    assert for_inference(holder)[0] is mine       # its forward may differ: not swapped
    assert mine.W_query.weight.data.base is None


# --- the CLI generates and chats with readied models ----------------------------------------------
def test_the_cli_loads_every_model_readied_for_inference(tmp_path):
    from tinygpt.cli.models import load_model, load_text_model
    from tinygpt.train.checkpoint import save_checkpoint
    from tinygpt.weights import save_pretrained_hf
    from tokenizer_files import write_qwen3_tokenizer_json
    gpt = build("gpt", np.float32, vocab_size=50257)
    save_checkpoint(tmp_path / "gpt" / "model.safetensors", gpt, config=gpt.cfg)
    qwen3 = build("qwen3", np.float32, vocab_size=320)
    save_pretrained_hf(qwen3, tmp_path / "qwen3")
    write_qwen3_tokenizer_json(tmp_path / "qwen3" / "tokenizer.json")
    loaded = [(load_model(tmp_path / "gpt")[0], gpt, "gpt"),
              (load_text_model(tmp_path / "gpt", chat=True).model, gpt, "gpt"),
              (load_text_model(tmp_path / "qwen3", chat=True).model, qwen3, "qwen3")]
    for model, original, kind in loaded:
        assert not model.training
        assert layer_types(model) == [FAST[kind]] * model.cfg["n_layers"]
        assert all(block.att.packed for block in model.trf_blocks)
        ids = tokens(model.cfg, batch=1, length=4)
        np.testing.assert_array_equal(generate(model, ids, 6, 16), generate(original.eval(), ids, 6, 16))
