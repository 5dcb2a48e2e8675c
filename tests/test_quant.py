"""tinygpt.quant and kernels/quant_gemv.py: the bf16 and q8 kernels against their NumPy references
(and torch's bf16 rounding), and quantized models against float32 models holding the same
(rounded or dequantized) weights: logits, KV-cache decoding, greedy tokens; the refusals."""
import numpy as np
import pytest
import torch

import tinygpt as tg
from quant_models import MODELS, bf16_folder, float_twin
from tinygpt.kernels import quant_gemv as K
from tinygpt.kernels._jit import num_threads, set_num_threads
from tinygpt.model import GPTModel, for_inference, generate
from tinygpt.quant import QuantError, QuantLinear, decode_bytes, quantize, quantized_format
from tinygpt.weights import load_pretrained

TIGHT = 1e-5  # float32 products summed in another order: |diff| <= TIGHT * max|logit|


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = num_threads()
    set_num_threads(request.param)
    yield request.param
    set_num_threads(before)


def test_bf16_rounding_is_torchs():
    rng = np.random.default_rng(0)
    w = np.concatenate([rng.standard_normal(1000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 1000),
                        np.float32([0.0, -0.0, np.inf, -np.inf, 1e-40, 3.4e38])])
    want = torch.from_numpy(w).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(K.float32_to_bf16_ref(w), want)
    assert np.isnan(K.bf16_to_float32_ref(K.float32_to_bf16_ref(np.float32([np.nan])))).all()


@pytest.mark.parametrize("rows", [1, 3, 9, 40])
def test_bf16_kernels_equal_the_reference(rows, threads):
    rng = np.random.default_rng(rows)
    w = K.float32_to_bf16_ref(rng.standard_normal((1100, 96)).astype(np.float32))
    x = rng.standard_normal((rows, 96)).astype(np.float32)
    want = K.gemv_bf16_ref(x, w)
    assert rel(K.matmul_bf16(x, w), want) < TIGHT
    assert rel(K.gemv_bf16(x, w), want) < TIGHT
    assert rel(K.gemm_bf16(x, w), want) < TIGHT and rel(K.tiled_bf16(x, w), want) < TIGHT
    assert np.array_equal(K.take_bf16(w, np.array([4, 0, 4])), K.bf16_to_float32_ref(w)[[4, 0, 4]])


@pytest.mark.parametrize("rows", [1, 3, 9, 40])
def test_q8_kernels_equal_the_reference(rows, threads):
    rng = np.random.default_rng(rows)
    q, s = K.q8_quantize_ref(rng.standard_normal((1100, 96)).astype(np.float32))
    x = rng.standard_normal((rows, 96)).astype(np.float32)
    want = K.gemv_q8_ref(x, q, s)
    assert rel(K.matmul_q8(x, q, s), want) < TIGHT
    assert rel(K.gemv_q8(x, q, s), want) < TIGHT
    assert rel(K.gemm_q8(x, q, s), want) < TIGHT and rel(K.tiled_q8(x, q, s), want) < TIGHT
    assert np.array_equal(K.take_q8(q, s, np.array([7, 1])), K.q8_dequantize_ref(q, s)[[7, 1]])


def test_q8_blocks_round_to_half_a_step():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 64)).astype(np.float32) * np.float32([[1e-3], [1], [30], [0], [1]])
    w[4, :32] = 0.0  # an all-zero block: scale 0, q 0
    q, s = K.q8_quantize_ref(w)
    assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == (5, 2)
    assert np.allclose(s, np.abs(w.reshape(5, 2, 32)).max(axis=2) / 127)
    err = np.abs(K.q8_dequantize_ref(q, s) - w).reshape(5, 2, 32)
    assert (err <= s[:, :, None] * 0.5 * (1 + 1e-5) + 1e-12).all()
    assert np.abs(q).max() == 127 and (q[3] == 0).all() and (q[4, :32] == 0).all()


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_bf16_model_equals_float32_on_the_rounded_weights(tmp_path, kind):
    folder = bf16_folder(tmp_path, kind, seed=1)
    ref, model = float_twin(folder), load_pretrained(folder, dtype="bf16")
    assert quantized_format(model) == "bf16" and model.tok_emb.weight.data.dtype == np.uint16
    assert model.trf_blocks[0].att.packed and model.trf_blocks[0].ff.packed  # one product per group
    ids = np.array([[1, 5, 7, 9, 11, 3, 2]])
    with tg.no_grad():
        assert rel(model(ids).data, ref(ids).data) < TIGHT
    # decoding through the KV cache (the GEMV kernels): the same tokens, logits step by step
    assert np.array_equal(generate(model, ids, 12, 32), generate(ref, ids, 12, 32))
    cache, ref_cache = model.new_kv_cache(32), ref.new_kv_cache(32)
    with tg.no_grad():
        model(ids, kv_cache=cache), ref(ids, kv_cache=ref_cache)
        for token in (4, 8, 15):
            step = np.array([[token]])
            got, want = model(step, kv_cache=cache).data, ref(step, kv_cache=ref_cache).data
            assert rel(got, want) < TIGHT
        ids = np.concatenate([ids, [[4, 8, 15]]], axis=1)
        assert rel(got[:, -1], model(ids).data[:, -1]) < TIGHT  # cached == uncached


def test_q8_model_equals_float32_on_the_dequantized_weights_and_is_close_to_float32(tmp_path):
    folder = bf16_folder(tmp_path, "qwen3", seed=2)
    ref, model = float_twin(folder), load_pretrained(folder, quantize="q8")
    dequantized = float_twin(folder)
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            _module(dequantized, name).weight.data[...] = module.weight.dequantize()
    ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    with tg.no_grad():
        got, exact, fp32 = model(ids).data, dequantized(ids).data, ref(ids).data
    assert rel(got, exact) < TIGHT
    # the bound stated in the README: q8 logits within 2% of the largest float32 logit here
    assert rel(got, fp32) < 0.02
    # greedy decoding of 16 tokens: identical on this model
    assert np.array_equal(generate(model, ids, 16, 32), generate(ref, ids, 16, 32))


def _module(model, name):
    for part in name.split("."):
        model = getattr(model, part)
    return model


def test_gpt2_models_quantize_in_memory():
    tg.manual_seed(4)
    cfg = {"vocab_size": 64, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
           "drop_rate": 0.0, "qkv_bias": True}
    model = GPTModel(cfg).eval()
    for p in model.parameters():
        if p.data.ndim == 2:  # weights on the bf16 grid: bf16 keeps them exactly
            p.data[...] = K.bf16_to_float32_ref(K.float32_to_bf16_ref(p.data))
    ids = np.array([[1, 2, 3, 4, 5]])
    with tg.no_grad():
        want = for_inference(model)(ids).data
        got = quantize(model, "bf16")(ids).data
    assert rel(got, want) < TIGHT and model.trf_blocks[0].att.packed
    assert isinstance(model.out_head, QuantLinear) and model.trf_blocks[0].att.W_query.bias is not None


def test_refusals_name_the_problem():
    tg.manual_seed(0)
    cls, cfg = MODELS["qwen3"]
    with pytest.raises(QuantError, match="unknown weight format 'q4'"):
        quantize(cls(cfg), "q4")
    model = cls({**cfg, "emb_dim": 16, "head_dim": 8})  # 16 inputs: not whole q8 blocks
    with pytest.raises(QuantError, match=r"q8 cannot quantize .*tok_emb|q8 cannot quantize .*W_query"):
        quantize(model, "q8")
    assert type(model.tok_emb).__name__ == "Embedding"  # refused before anything changed
    quantize(model, "bf16")
    with pytest.raises(QuantError, match="quantized already"):
        quantize(model, "bf16")
    with pytest.raises(QuantError, match="takes a tinygpt model"):
        quantize(np.zeros((2, 2)), "bf16")


def test_the_serve_pages_inspection_reads_a_bf16_model_as_its_float_twin(tmp_path):
    from tinygpt.viz import inspect_position
    folder = bf16_folder(tmp_path, "qwen3", seed=8)
    ids = np.array([1, 5, 7, 9, 11, 3])
    got = inspect_position(load_pretrained(folder, dtype="bf16"), ids, 4, 1)
    want = inspect_position(float_twin(folder), ids, 4, 1)
    assert got.top_ids == want.top_ids and got.lens_ids == want.lens_ids
    assert np.allclose(got.attention, want.attention, atol=1e-6)


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_decode_bytes_counts_what_a_token_reads_in_each_format(tmp_path, kind):
    folder = bf16_folder(tmp_path, kind, seed=3)
    ref = float_twin(folder)
    params = dict(ref.named_parameters())             # a tied head is listed once, as the table
    table = params.pop("tok_emb.weight").data
    weights = sum(p.data.size for p in params.values() if p.data.ndim == 2)
    weights += table.size if ref.weights_tied else table.shape[1]  # the head, or one row
    vectors = sum(p.data.size for p in params.values() if p.data.ndim == 1)
    assert ref.weights_tied == (kind == "qwen3")
    assert decode_bytes(ref) == 4 * weights + 4 * vectors
    assert decode_bytes(load_pretrained(folder, dtype="bf16")) == 2 * weights + 4 * vectors
    # q8: a byte a weight and a float32 scale a block of 32
    assert decode_bytes(load_pretrained(folder, quantize="q8")) == weights * 9 // 8 + 4 * vectors
