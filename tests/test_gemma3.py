"""Gemma3Model against transformers' Gemma3ForCausalLM: a tiny random model saved with
save_pretrained and read by load_pretrained gives the same logits (float32 and float64) and, in
float64, the same gradient for every parameter; greedy generation equals transformers' `generate`
past the sliding window, with and without the KV cache; the local layers' cache stays bounded by
the window; the sliding-window attention op against PyTorch and finite differences; training
steps lower the loss; the configs and the config.json checks."""
import copy
import json
import types

import numpy as np
import pytest
import torch

import tinygpt as tg
from helpers import check_op, fd_check
from modern_models import (compare_grads, compare_logits, decode_through_cache, loss_and_grads, tokens,
                           torch_loss_and_grads, train_steps)
from tinygpt.errors import TinyGPTError
from tinygpt.model import GEMMA3_CONFIGS, Gemma3Model, for_inference, sliding_window_attention
from tinygpt.weights import load_pretrained, save_pretrained_hf
from tinygpt.weights.claims import WeightsError
from tinygpt.weights.hf_names import GEMMA3_HF_TO_BOOK, expected_shapes

transformers = pytest.importorskip("transformers")

WINDOW = 4
# 7 layers: five local, one global (the sixth), one local after it; head_dim 8, 4 query heads
# sharing 2 key/value heads; the global RoPE stretched linearly by 2; scores scaled by 6 ** -0.5
HF_TINY = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 7,
           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
           "max_position_embeddings": 64, "sliding_window": WINDOW, "query_pre_attn_scalar": 6,
           "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 2.0,
                                                  "rope_theta": 1000.0},
                               "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}}
TINY_GEMMA3 = {"vocab_size": 64, "context_length": 64, "emb_dim": 32, "n_heads": 4, "n_layers": 7,
               "hidden_dim": 48, "head_dim": 8, "n_kv_groups": 2, "rope_base": 1000.0,
               "rope_local_base": 100.0, "rope_linear_factor": 2.0, "sliding_window": WINDOW,
               "layer_types": None, "query_pre_attn_scalar": 6}


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """(folder, the transformers model saved in it): norms drawn away from their zero start, so a
    norm scaling by weight instead of (1 + weight) shows."""
    torch.manual_seed(0)
    model = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**HF_TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.normal_(0.0, 0.3)
    folder = tmp_path_factory.mktemp("gemma3")
    model.save_pretrained(folder)
    return folder, model


def torch_tables(base, factor, n=64):
    inv = 1.0 / base ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8) / factor
    angles = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
    angles = torch.cat([angles, angles], dim=1)
    return torch.cos(angles), torch.sin(angles)


def hf_float64(model):
    """A float64 copy whose RoPE tables, RMSNorms and embedding scale are computed in float64
    (transformers computes them in float32 whatever the dtype), all else theirs."""
    model = copy.deepcopy(model).to(torch.float64)
    tables = {"full_attention": torch_tables(1000.0, 2.0), "sliding_attention": torch_tables(100.0, 1.0)}

    def rotary(self, x, position_ids, layer_type):
        cos, sin = tables[layer_type]
        return cos[position_ids], sin[position_ids]

    rot = model.model.rotary_emb
    rot.forward = types.MethodType(rotary, rot)
    for module in model.modules():
        if type(module).__name__ == "Gemma3RMSNorm":
            def rms(self, x):
                return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight)
            module.forward = types.MethodType(rms, module)
    model.model.embed_tokens.embed_scale = torch.tensor(32 ** 0.5, dtype=torch.float64)
    model.model.embed_tokens.padding_idx = None  # no zeroed gradient row for the pad token
    return model


def twins(hf_folder, dtype):
    folder, theirs = hf_folder
    ours = load_pretrained(folder, dtype=dtype)
    if dtype == np.float64:
        theirs = hf_float64(theirs)
    return ours, theirs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_load_pretrained_logits_match_transformers(hf_folder, dtype):
    ours, theirs = twins(hf_folder, dtype)
    assert isinstance(ours, Gemma3Model) and ours.weights_tied
    assert ours.cfg["layer_types"] == theirs.config.layer_types
    ids = tokens(TINY_GEMMA3, batch=2, length=13)     # 13 tokens: past the window of 4
    with torch.no_grad():
        their_logits = theirs(torch.from_numpy(ids)).logits.numpy()
    logits = ours(ids).data
    assert logits.dtype == dtype
    compare_logits(logits, their_logits, dtype, "gemma3 logits")


def test_every_parameter_gradient_matches_transformers(hf_folder):
    ours, theirs = twins(hf_folder, np.float64)
    ids, targets = tokens(TINY_GEMMA3, length=11), tokens(TINY_GEMMA3, length=11, seed=1)
    _, grads = loss_and_grads(ours.train(), ids, targets)
    _, t_grads = torch_loss_and_grads(theirs, ids, targets, logits_of=lambda out: out.logits)
    names = {book: hf for hf, (book, _) in
             expected_shapes({**ours.cfg, "head_dim": 8}, "scale", GEMMA3_HF_TO_BOOK).items()}
    compare_grads(grads, t_grads, names, np.float64, "gemma3")


def test_greedy_generation_matches_transformers_generate_past_the_window(hf_folder):
    ours, theirs = twins(hf_folder, np.float64)
    prompt = tokens(TINY_GEMMA3, batch=1, length=3, seed=3)
    with torch.no_grad():
        want = theirs.generate(torch.from_numpy(prompt), max_new_tokens=20, do_sample=False,
                               eos_token_id=None, pad_token_id=0).numpy()
    for use_cache in (True, False):
        got = tg.generate(ours, prompt, 20, 64, use_cache=use_cache)
        np.testing.assert_array_equal(got, want, err_msg=f"use_cache={use_cache}")


def test_kv_cache_decode_equals_the_full_forward_and_local_layers_keep_only_the_window():
    tg.manual_seed(4)
    model = Gemma3Model(TINY_GEMMA3).to(np.float64).eval()
    ids = tokens(TINY_GEMMA3, batch=2, length=30, seed=5)
    with tg.no_grad():
        full = model(ids).data
    stepped, cache = decode_through_cache(model, ids, prefill=6)
    np.testing.assert_allclose(stepped, full, rtol=1e-12, atol=1e-12)
    assert cache.length == 30
    for kind, layer in zip(model.cfg["layer_types"], cache.layers):
        if kind == "sliding_attention":   # 30 tokens seen, window - 1 kept
            assert layer.k.shape == (2, 2, WINDOW - 1, 8) and layer.length == 30
        else:
            assert layer.length == 30 and layer.k.shape[2] == 64
    cache.reset()
    assert cache.length == 0


def _torch_window_attention(q, k, v, scale, window):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    t, n = q.shape[2], k.shape[2]
    pos_q = torch.arange(n - t, n)[:, None]
    pos_k = torch.arange(n)[None, :]
    hidden = (pos_k > pos_q) | (pos_q - pos_k >= window)
    scores = (q @ k.transpose(-2, -1) * scale).masked_fill(hidden, float("-inf"))
    return torch.softmax(scores, -1) @ v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("t,length,window", [(7, 7, 3), (2, 9, 4), (1, 5, 5), (5, 5, 9)])
def test_sliding_window_attention_against_torch(dtype, t, length, window):
    rng = np.random.default_rng(length)
    q = rng.standard_normal((2, 4, t, 6)).astype(dtype)
    k, v = (rng.standard_normal((2, 2, length, 6)).astype(dtype) for _ in range(2))
    check_op(lambda a, b, c: sliding_window_attention(a, b, c, 0.4, window),
             lambda a, b, c: _torch_window_attention(a, b, c, 0.4, window), [q, k, v],
             name=f"sliding_window_attention T={t} L={length} window={window}")


def test_sliding_window_attention_finite_differences():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 6, 4)) for _ in range(3))
    fd_check(lambda a, b, c: sliding_window_attention(a, b, c, 0.5, 2), [q, k, v],
             name="sliding_window_attention")


def test_sliding_window_attention_refuses_bad_shapes_and_windows():
    q, k = np.zeros((1, 4, 3, 8)), np.zeros((1, 2, 5, 8))
    for args, named in [((q, np.zeros((1, 3, 5, 8)), np.zeros((1, 3, 5, 8)), 0.5, 2), "G dividing H"),
                        ((np.zeros((1, 4, 6, 8)), k, k, 0.5, 2), "L >= T"),
                        ((q, k, k, 0.5, 0), "window"), ((q, k, k, 0.5, 2.0), "window")]:
        with pytest.raises(TinyGPTError, match=named):
            sliding_window_attention(*args)


def test_training_steps_lower_the_loss():
    tg.manual_seed(0)
    model = Gemma3Model(TINY_GEMMA3)
    def every_gradient_finite(m):
        assert all(p.grad is not None and np.isfinite(p.grad).all() for p in m.parameters())
    losses = train_steps(model, tokens(TINY_GEMMA3, batch=2, length=14, seed=6),
                         after_backward=every_gradient_finite)
    assert losses[-1] < 0.7 * losses[0], losses


def test_for_inference_leaves_the_gemma_layers_and_the_outputs_as_they_are():
    tg.manual_seed(1)
    model = Gemma3Model(TINY_GEMMA3).eval()
    ids = tokens(TINY_GEMMA3, length=9)
    with tg.no_grad():
        before = model(ids).data
        kinds = [type(m) for m in model.modules()]
        assert for_inference(model) is model
        assert [type(m) for m in model.modules()] == kinds
        np.testing.assert_array_equal(model(ids).data, before)


def test_save_pretrained_hf_writes_what_transformers_reads(tmp_path):
    tg.manual_seed(2)
    ours = Gemma3Model(TINY_GEMMA3)
    for p in ours.parameters():
        if p.ndim == 1:
            p.data[...] = np.random.default_rng(p.size).normal(0.0, 0.3, p.shape)
    save_pretrained_hf(ours, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(theirs).__name__ == "Gemma3ForCausalLM"
    ids = tokens(TINY_GEMMA3, length=12)
    with torch.no_grad():
        their_logits = theirs(torch.from_numpy(ids)).logits.numpy()
    compare_logits(ours(ids).data, their_logits, np.float32, "gemma3 saved")
    np.testing.assert_array_equal(load_pretrained(tmp_path)(ids).data, ours(ids).data)


def test_a_multimodal_gemma3_folder_loads_its_text_model(tmp_path):
    """model_type "gemma3" (Gemma3ForConditionalGeneration, as the 4B and larger ship): the text
    model is read from its prefixed names, the vision tower left out; text logits as theirs."""
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": 28, "patch_size": 14}
    config = transformers.Gemma3Config(text_config={**HF_TINY, "num_hidden_layers": 2},
                                       vision_config=vision, mm_tokens_per_image=4)
    torch.manual_seed(3)
    theirs = transformers.Gemma3ForConditionalGeneration(config).eval()
    theirs.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    assert isinstance(ours, Gemma3Model) and ours.cfg["n_layers"] == 2
    ids = tokens(TINY_GEMMA3, length=9)
    with torch.no_grad():
        their_logits = theirs(input_ids=torch.from_numpy(ids)).logits.numpy()
    compare_logits(ours(ids).data, their_logits, np.float32, "gemma3 multimodal text logits")


def test_transformers_4_config_spelling_gives_the_same_model(hf_folder, tmp_path):
    """rope_theta / rope_local_base_freq / rope_scaling and no layer_types (the pattern of six),
    as the released checkpoints' config.json spell them."""
    folder, theirs = hf_folder
    config = json.loads((folder / "config.json").read_text())
    for key in ("rope_parameters", "layer_types"):
        del config[key]
    config.update(rope_theta=1000.0, rope_local_base_freq=100.0, sliding_window_pattern=6,
                  rope_scaling={"rope_type": "linear", "factor": 2.0})
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").symlink_to(folder / "model.safetensors")
    ids = tokens(TINY_GEMMA3, length=10)
    np.testing.assert_array_equal(load_pretrained(tmp_path)(ids).data, load_pretrained(folder)(ids).data)


@pytest.mark.parametrize("change,named", [
    ({"layer_types": ["sliding_attention"] * 3}, "layer_types"),
    ({"final_logit_softcapping": 30.0}, "final_logit_softcapping"),
    ({"hidden_activation": "silu"}, "hidden_activation"),
    ({"sliding_window": "512"}, "sliding_window"),
    ({"rope_parameters": {"full_attention": {"rope_type": "yarn", "rope_theta": 1e6}}}, "yarn"),
    ({"num_hidden_layers": 10 ** 9, "layer_types": None}, "num_hidden_layers"),
])
def test_bad_configs_are_refused_by_name(hf_folder, tmp_path, change, named):
    folder, _ = hf_folder
    config = {**json.loads((folder / "config.json").read_text()), **change}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").symlink_to(folder / "model.safetensors")
    with pytest.raises(WeightsError, match=named):
        load_pretrained(tmp_path)


def test_model_config_errors_name_the_key():
    with pytest.raises(TinyGPTError, match="sliding_window"):
        Gemma3Model({k: v for k, v in TINY_GEMMA3.items() if k != "sliding_window"})
    with pytest.raises(TinyGPTError, match="layer_types"):
        Gemma3Model({**TINY_GEMMA3, "layer_types": ["sliding_attention"] * 6 + ["global"]})


def test_the_270m_config_has_the_books_parameter_count():
    """The book prints 435,870,336 parameters, 268,098,176 unique with the head tied to the
    embedding; counted from the shapes load_pretrained expects (no model is built)."""
    cfg = GEMMA3_CONFIGS["270M"]
    assert cfg["layer_types"].count("full_attention") == 3 and len(cfg["layer_types"]) == 18
    counts = [sum(int(np.prod(shape)) for _, shape in
                  expected_shapes({**cfg, "tie_weights": tie}, "scale", GEMMA3_HF_TO_BOOK).values())
              for tie in (False, True)]
    assert counts == [435_870_336, 268_098_176]
