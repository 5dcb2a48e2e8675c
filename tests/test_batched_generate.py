"""Batched generation (tinygpt/model/batched.py) and the cached-attention kernel's `starts`.

The kernel with a per-row first valid key equals its NumPy reference, and the reference equals
each row computed alone on its unpadded cache (the padding holds nan: never read). Decoding
several prompts together gives, row for row, what one-at-a-time `generate` gives (tiny Qwen3 and
Llama 3; prompts of different lengths, rows stopping at different steps; LoRA layers, which
cannot be packed); seeded sampling is reproducible; GPT-2 runs one at a time."""
import numpy as np
import pytest
from kernel_checks import NB, REF, check, make, warm_kernels  # noqa: F401
from modern_models import TINY_LLAMA, TINY_QWEN3

import tinygpt as tg
from tinygpt import kernels
from tinygpt.errors import InputError, InputTypeError
from tinygpt.finetune.lora import replace_linear_with_lora
from tinygpt.model import GPTModel, Llama3Model, Qwen3Model, generate, generate_batched
from tinygpt.model.batched import BatchedKVCache, batchable

PROMPT_LENGTHS = (3, 9, 1, 14)
GPT_SMALL = {"vocab_size": 97, "context_length": 16, "emb_dim": 24, "n_heads": 4, "n_layers": 2,
             "drop_rate": 0.0, "qkv_bias": True}
MAX_NEW = 10


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b, g, group, tq, length", [(3, 2, 2, 1, 20), (2, 1, 4, 3, 9), (4, 3, 1, 1, 5)])
def test_cached_attention_with_starts(dtype, b, g, group, tq, length):
    rng = np.random.default_rng(length)
    hd, h = 5, g * group
    starts = rng.integers(0, length - tq + 1, b)
    starts[0] = length - tq                                 # a row whose queries see only themselves
    q = make(rng, (b, h, tq, hd), dtype, 2.0, "T")
    k, v = make(rng, (b, g, length + 3, hd), dtype), make(rng, (b, g, length + 3, hd), dtype)
    for r, s in enumerate(starts):                          # the padding and the spare positions
        k[r, :, :s] = v[r, :, :s] = np.nan
    k[:, :, length:] = v[:, :, length:] = np.nan
    want = REF["cached_attention"](q, k, v, length, 0.4, starts)
    check("cached_attention starts", NB["cached_attention"](q, k, v, length, 0.4, starts), want)
    assert not np.isnan(want).any()
    for r, s in enumerate(starts):                          # each row alone, its cache unpadded
        alone = REF["cached_attention"](q[r:r + 1], np.ascontiguousarray(k[r:r + 1, :, s:]),
                                        np.ascontiguousarray(v[r:r + 1, :, s:]), length - s, 0.4)
        check("row alone", want[r:r + 1], alone)
    zeros = np.zeros(b, np.int64)
    k, v = np.nan_to_num(k), np.nan_to_num(v)
    for impl in (NB, REF):                                  # starts of zeros: as without starts
        check("zero starts", impl["cached_attention"](q, k, v, length, 0.4, zeros),
              impl["cached_attention"](q, k, v, length, 0.4))


def test_cached_attention_refuses_bad_starts():
    q, k = np.zeros((2, 2, 2, 4), np.float32), np.zeros((2, 2, 8, 4), np.float32)
    for impl in (NB, REF):
        with pytest.raises(ValueError, match="one per row"):
            impl["cached_attention"](q, k, k, 6, 0.5, np.zeros(3, np.int64))
        with pytest.raises(ValueError, match="one per row"):
            impl["cached_attention"](q, k, k, 6, 0.5, np.zeros(2))
        with pytest.raises(ValueError, match="every query sees a key"):
            impl["cached_attention"](q, k, k, 6, 0.5, np.array([0, 5]))   # > length - Tq
        with pytest.raises(ValueError, match="every query sees a key"):
            impl["cached_attention"](q, k, k, 6, 0.5, np.array([-1, 0]))


def tiny(model_class, cfg, dtype, seed=1):
    tg.manual_seed(seed)
    return model_class(cfg).to(dtype).eval()


def prompts_of(lengths, vocab, seed=0):
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(0, vocab, n)] for n in lengths]


def one_at_a_time(model, prompts, max_new, stop=None):
    """Each prompt through `generate` alone, cut before its first `stop`."""
    out = []
    for p in prompts:
        new = [int(t) for t in generate(model, np.array([p]), max_new, len(p) + max_new)[0, len(p):]]
        out.append(new[:new.index(stop)] if stop in new else new)
    return out


@pytest.fixture
def count_batched(monkeypatch):
    """The number of cached-attention calls given a batch of starts (the batched route ran)."""
    calls, kernel = [], kernels.cached_attention

    def counted(q, k, v, length, scale, starts=None):
        calls.append(starts is not None and q.shape[0] > 1)
        return kernel(q, k, v, length, scale, starts)
    monkeypatch.setattr(kernels, "cached_attention", counted)
    return calls


@pytest.mark.parametrize("model_class, cfg", [(Qwen3Model, TINY_QWEN3), (Llama3Model, TINY_LLAMA)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_greedy_equals_one_at_a_time(model_class, cfg, dtype, count_batched):
    model = tiny(model_class, cfg, dtype)
    prompts = prompts_of(PROMPT_LENGTHS, cfg["vocab_size"])
    want = one_at_a_time(model, prompts, MAX_NEW)
    count_batched.clear()
    assert generate_batched(model, prompts, MAX_NEW) == want
    assert sum(count_batched) == (MAX_NEW - 1) * cfg["n_layers"]  # every decode step batched
    # a stop id that ends rows at different steps (row 1 at its 5th token), others never
    stop = want[1][4]
    cut = one_at_a_time(model, prompts, MAX_NEW, stop)
    assert len({len(c) for c in cut}) > 1
    assert generate_batched(model, prompts, MAX_NEW, stop_ids=[stop]) == cut
    kept = generate_batched(model, prompts, MAX_NEW, stop_ids=[stop], keep_stop=True)
    assert kept == [c + [stop] if len(c) < MAX_NEW else c for c in cut]


def test_batched_greedy_with_lora_layers(count_batched):
    """LoRA's wrapped projections cannot be packed: the batched route runs the layers themselves."""
    model = tiny(Qwen3Model, TINY_QWEN3, np.float64)
    replace_linear_with_lora(model, rank=2, alpha=2.0)
    for name, p in model.named_parameters():
        if name.endswith("B"):
            p.data[...] = np.random.default_rng(3).standard_normal(p.shape) * 0.3
    prompts = prompts_of((5, 2, 8), TINY_QWEN3["vocab_size"], seed=1)
    want = one_at_a_time(model, prompts, MAX_NEW)
    count_batched.clear()
    assert generate_batched(model, prompts, MAX_NEW) == want
    assert any(count_batched)


def test_sampled_rollouts_are_reproducible(count_batched):
    model = tiny(Llama3Model, TINY_LLAMA, np.float32)
    prompt = prompts_of((6,), TINY_LLAMA["vocab_size"])[0]

    def sample(seed):
        tg.manual_seed(seed)
        return generate_batched(model, [prompt] * 6, MAX_NEW, temperature=1.5, top_p=0.95)
    first = sample(7)
    assert any(count_batched) and len(first) == 6
    assert all(len(row) == MAX_NEW for row in first)
    assert len({tuple(row) for row in first}) > 1          # the rows are different samples
    assert sample(7) == first
    assert sample(8) != first
    # a tiny temperature is greedy: every row is the one greedy answer
    tg.manual_seed(0)
    assert generate_batched(model, [prompt] * 3, MAX_NEW, temperature=1e-6) == \
        one_at_a_time(model, [prompt], MAX_NEW) * 3


def test_the_batched_cache_right_aligns_and_drops_rows():
    model = tiny(Qwen3Model, TINY_QWEN3, np.float32)
    prompts = [np.array(p) for p in prompts_of((4, 2), TINY_QWEN3["vocab_size"])]
    caches = []
    with tg.no_grad():
        for p in prompts:
            caches.append(model.new_kv_cache(len(p)))
            model(p[None], kv_cache=caches[-1])
    cache = BatchedKVCache.from_prompts(caches, [4, 2], 9)
    assert cache.length == 4 and cache.starts.tolist() == [0, 2] and cache.max_len == 9
    layer = cache.layers[1]
    assert layer.k.shape == (2, TINY_QWEN3["n_kv_groups"], 9, TINY_QWEN3["head_dim"])
    np.testing.assert_array_equal(layer.k[1, :, 2:4], caches[1].layers[1].k[0, :, :2])
    np.testing.assert_array_equal(layer.v[0, :, :4], caches[0].layers[1].v[0])
    cache.keep(np.array([1]))
    assert cache.starts.tolist() == [2] and all(lay.k.shape[0] == 1 for lay in cache.layers)


def test_gpt2_and_long_prompts_run_one_at_a_time(count_batched):
    tg.manual_seed(2)
    gpt = GPTModel(GPT_SMALL).eval()
    assert not batchable(gpt) and batchable(tiny(Qwen3Model, TINY_QWEN3, np.float32))
    prompts = prompts_of((3, 6), GPT_SMALL["vocab_size"])
    assert generate_batched(gpt, prompts, 5) == one_at_a_time(gpt, prompts, 5)
    model = tiny(Qwen3Model, TINY_QWEN3, np.float32)       # 30 + 10 > context 32: no batch
    long = prompts_of((30, 4), TINY_QWEN3["vocab_size"])
    count_batched.clear()
    assert generate_batched(model, long, MAX_NEW) == [
        [int(t) for t in generate(model, np.array([p]), MAX_NEW, 32)[0, len(p):]] for p in long]
    assert not any(count_batched)


def test_bad_input_is_refused():
    model = tiny(Qwen3Model, TINY_QWEN3, np.float32)
    with pytest.raises(InputError, match="at least one prompt"):
        generate_batched(model, [], 3)
    with pytest.raises(InputError, match="at least one prompt"):
        generate_batched(model, [[1, 2], []], 3)
    with pytest.raises(InputError, match="as long as the context"):
        generate_batched(model, [[1] * 32, [2]], 3)
    with pytest.raises(InputError, match="temperature"):
        generate_batched(model, [[1], [2]], 3, temperature=-1.0)
    with pytest.raises(InputTypeError, match="list of prompts"):
        generate_batched(model, np.array([1, 2]), 3)
