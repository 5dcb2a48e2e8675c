"""Generation (sections 4.7 and 5.3): the book's greedy loop against the torch twin, KV-cache
tokens equal to uncached tokens (greedy and seeded sampling), the sliding window past the
context length, top-k/temperature/eos semantics, refused arguments and non-finite models, and
the text helpers."""
import numpy as np
import pytest
import torch
from reference import torch_gpt as ref

import tinygpt as tg
from tinygpt.model import (
    GPTModel,
    generate,
    generate_text_simple,
    text_to_token_ids,
    token_ids_to_text,
)

torch.set_num_threads(1)  # tiny models: threads only add noise on a 2-core box

SMALL = {"vocab_size": 97, "context_length": 16, "emb_dim": 24, "n_heads": 4, "n_layers": 2,
         "drop_rate": 0.1, "qkv_bias": True}


@pytest.fixture(scope="module")
def model():
    tg.manual_seed(5)
    return GPTModel(SMALL).eval()


def _prompt(batch=1, n=4, seed=0):
    return np.random.default_rng(seed).integers(0, 97, size=(batch, n)).astype(np.int64)


def test_generate_text_simple_matches_the_torch_twin(model):
    twin = ref.GPTModel(SMALL).eval()
    m64 = GPTModel(SMALL).eval().to(np.float64)
    m64.load_state_dict(model.state_dict())
    ref.copy_tinygpt_to_torch(m64, twin)
    prompt = _prompt(2, 3)
    ours = generate_text_simple(m64, prompt, max_new_tokens=20, context_size=16)
    theirs = ref.generate_text_simple(twin, torch.from_numpy(prompt), 20, 16).numpy()
    assert ours.dtype == np.int64 and ours.shape == (2, 23)
    np.testing.assert_array_equal(ours, theirs)                   # 20 > 16 - 3: window slides too


@pytest.mark.parametrize("batch,n", [(1, 1), (1, 5), (3, 4), (2, 16)])
def test_kv_cache_greedy_tokens_equal_uncached(model, batch, n):
    prompt = _prompt(batch, n)
    cached = generate(model, prompt, 10, 16, use_cache=True)
    uncached = generate(model, prompt, 10, 16, use_cache=False)
    np.testing.assert_array_equal(cached, uncached)
    np.testing.assert_array_equal(cached, generate_text_simple(model, prompt, 10, 16))


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (1.4, 25), (0.7, 5)])
def test_kv_cache_seeded_sampling_tokens_equal_uncached(model, temperature, top_k):
    prompt = _prompt(2, 3)
    tg.manual_seed(123)
    cached = generate(model, prompt, 12, 16, temperature=temperature, top_k=top_k, use_cache=True)
    tg.manual_seed(123)
    uncached = generate(model, prompt, 12, 16, temperature=temperature, top_k=top_k,
                        use_cache=False)
    np.testing.assert_array_equal(cached, uncached)
    tg.manual_seed(123)
    again = generate(model, prompt, 12, 16, temperature=temperature, top_k=top_k)
    np.testing.assert_array_equal(again, cached)                  # a seeded run reproduces
    tg.manual_seed(124)
    assert not np.array_equal(generate(model, prompt, 12, 16, temperature=temperature,
                                       top_k=top_k), cached)


@pytest.mark.parametrize("context_size", [16, 6])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generation_past_the_context_window_slides_like_the_book(model, context_size, temperature):
    """40 new tokens after 20 prompt tokens with a window of 16 (or 6): the cache is rebuilt
    from the last context_size tokens once full, so the tokens equal the uncached ones."""
    prompt = _prompt(1, 20)
    tg.manual_seed(9)
    cached = generate(model, prompt, 40, context_size, temperature=temperature, top_k=10)
    tg.manual_seed(9)
    uncached = generate(model, prompt, 40, context_size, temperature=temperature, top_k=10,
                        use_cache=False)
    assert cached.shape == (1, 60)
    np.testing.assert_array_equal(cached, uncached)
    # and the uncached path is the book's crop: token t+1 depends on the last window only
    ids = uncached
    if temperature == 0.0:
        for t in (20, 35, 59):
            window = ids[:, t - context_size:t]
            assert model(window).data[0, -1].argmax() == ids[0, t]


def test_the_cache_matches_full_forward_logits():
    tg.manual_seed(2)
    m = GPTModel({**SMALL, "drop_rate": 0.0}).to(np.float64)
    ids = _prompt(2, 16)
    full = m(ids).data
    cache, outs = m.new_kv_cache(), []
    with tg.no_grad():
        for a, b in [(0, 5), (5, 6), (6, 12), (12, 16)]:
            outs.append(m(ids[:, a:b], kv_cache=cache).data)
        assert cache.length == 16
        with pytest.raises(ValueError, match=r"16 cached \+ 1 new.*context_length is 16"):
            m(ids[:, :1], kv_cache=cache)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), full, rtol=1e-10, atol=1e-12)


def test_top_k_one_is_greedy_and_top_k_limits_the_choice(model):
    prompt = _prompt(1, 4)
    greedy = generate(model, prompt, 8, 16)
    tg.manual_seed(0)
    np.testing.assert_array_equal(generate(model, prompt, 8, 16, temperature=2.0, top_k=1), greedy)
    tg.manual_seed(0)
    out = generate(model, prompt, 1, 16, temperature=5.0, top_k=3)
    top3 = np.argsort(model(prompt).data[0, -1])[-3:]
    assert out[0, -1] in top3


def test_eos_stops_before_appending(model):
    prompt = _prompt(1, 4)
    full = generate(model, prompt, 10, 16)
    eos = int(full[0, 7])                                         # the 4th generated token
    first = int(np.nonzero(full[0, 4:] == eos)[0][0]) + 4
    out = generate(model, prompt, 10, 16, eos_id=eos)
    np.testing.assert_array_equal(out, full[:, :first])
    with pytest.raises(ValueError, match="batch size 1"):
        generate(model, _prompt(2, 4), 3, 16, eos_id=eos)


def test_generate_keeps_the_input_kind_and_checks_arguments(model):
    prompt = _prompt(1, 4)
    out = generate(model, tg.Tensor(prompt), 3, 16)
    assert isinstance(out, tg.Tensor) and out.shape == (1, 7)
    assert isinstance(generate_text_simple(model, tg.Tensor(prompt), 2, 16), tg.Tensor)
    np.testing.assert_array_equal(generate(model, prompt, 0, 16), prompt)
    with pytest.raises(ValueError, match="context_length"):
        generate(model, prompt, 3, 17)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompt, 3, 16, temperature=-1.0)
    with pytest.raises(ValueError, match="batch"):
        generate(model, prompt[0], 3, 16)
    with pytest.raises(ValueError):
        generate(model, prompt, 3, 16, temperature=1.0, top_k=98)
    assert tg.is_grad_enabled()


def test_generation_records_no_graph(model):
    logits_before = model(_prompt(1, 3))
    assert logits_before.requires_grad                            # grad mode is on outside
    generate(model, _prompt(1, 3), 3, 16)
    assert all(p.grad is None for p in model.parameters())


class _CharTokenizer:
    """A stand-in with the tiktoken-style interface (encode(text, allowed_special=...), decode)."""

    def encode(self, text, allowed_special=None):
        return [ord(c) - 32 for c in text]

    def decode(self, ids):
        return "".join(chr(i + 32) for i in ids)


class _PlainTokenizer:
    def encode(self, text):
        return [ord(c) - 32 for c in text]

    def decode(self, ids):
        return "".join(chr(i + 32) for i in ids)


@pytest.mark.parametrize("tokenizer", [_CharTokenizer(), _PlainTokenizer()])
def test_text_helpers_round_trip(tokenizer, model):
    ids = text_to_token_ids("Every effort", tokenizer)
    assert ids.dtype == np.int64 and ids.shape == (1, 12)
    assert token_ids_to_text(ids, tokenizer) == "Every effort"
    assert token_ids_to_text(tg.Tensor(ids), tokenizer) == "Every effort"
    out = generate(model, ids, 5, 16)
    assert token_ids_to_text(out, tokenizer).startswith("Every effort")


# --- refused arguments and broken models (issue 27.12) --------------------------------------------
@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -0.5])
def test_temperature_must_be_a_finite_number_not_below_zero(model, temperature):
    with pytest.raises(tg.errors.InputError, match="temperature"):
        generate(model, _prompt(1, 3), 2, 16, temperature=temperature)


@pytest.mark.parametrize("fn", [generate, generate_text_simple])
@pytest.mark.parametrize("max_new_tokens", [-1, 2.5, True])
def test_max_new_tokens_must_be_a_count(model, fn, max_new_tokens):
    with pytest.raises(tg.errors.TinyGPTError, match="max_new_tokens"):
        fn(model, _prompt(1, 3), max_new_tokens, 16)


@pytest.mark.parametrize("temperature", [1e-30, 1e-300, 5e-324])
@pytest.mark.parametrize("top_k", [None, 5])
def test_a_tiny_temperature_samples_like_greedy(model, temperature, top_k):
    """logits / 1e-30 overflows float32; sampling shifts by the row maximum first (in float64),
    so the largest logit keeps all the probability and the draw is the argmax."""
    prompt = _prompt(2, 3)
    greedy = generate(model, prompt, 6, 16)
    tg.manual_seed(0)
    np.testing.assert_array_equal(generate(model, prompt, 6, 16, temperature=temperature,
                                           top_k=top_k), greedy)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NumPy's, on the nan/inf
@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_model_with_non_finite_weights_is_refused(use_cache, bad):
    tg.manual_seed(5)
    broken = GPTModel(SMALL).eval()
    broken.trf_blocks[1].ff.layers[0].weight.data[3, 4] = bad
    with pytest.raises(tg.errors.InputError, match=r"non-finite.*trf_blocks\.1\.ff\.layers\.0\.weight"):
        generate(broken, _prompt(1, 3), 2, 16, use_cache=use_cache)
    with pytest.raises(tg.errors.InputError, match="non-finite"):
        generate_text_simple(broken, _prompt(1, 3), 2, 16)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings
def test_non_finite_logits_from_finite_weights_are_refused():
    """Finite weights can still overflow: an output head of 1e38 turns the logits into inf."""
    tg.manual_seed(5)
    m = GPTModel(SMALL).eval()
    m.out_head.weight.data[:] = 3e38
    with pytest.raises(tg.errors.InputError, match="non-finite logits"):
        generate(m, _prompt(1, 3), 2, 16, temperature=1.0)
