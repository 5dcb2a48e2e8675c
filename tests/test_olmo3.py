"""Olmo3Model against transformers' Olmo3ForCausalLM: a tiny random model saved with
save_pretrained and read by load_pretrained gives the same logits with YaRN on its full layers
(float32), the same gradient for every parameter (float64), and the same greedy tokens as
transformers' `generate` past the sliding window, with and without the KV cache; the
sliding-window layers' cache stays bounded; training steps lower the loss; bad configs are refused."""
import copy
import json
import types

import numpy as np
import pytest
import torch

import tinygpt as tg
from modern_models import (compare_grads, compare_logits, decode_through_cache, loss_and_grads, tokens,
                           torch_loss_and_grads, train_steps)
from tinygpt.model import OLMO3_CONFIGS, Olmo3Model
from tinygpt.model.olmo3 import yarn_inv_freq
from tinygpt.weights import load_pretrained, save_pretrained_hf
from tinygpt.weights.claims import WeightsError
from tinygpt.weights.hf_names import OLMO3_HF_TO_BOOK, expected_shapes

transformers = pytest.importorskip("transformers")

WINDOW = 4
# head_dim 16, theta 10,000 over 64 trained positions: YaRN's ramp runs over dims 0..3, so some
# frequencies are kept, some divided by 4 and some blended; attention_factor left to its default
YARN = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10_000.0,
        "original_max_position_embeddings": 64, "beta_fast": 4.0, "beta_slow": 1.0}
HF_TINY = {"vocab_size": 64, "hidden_size": 64, "intermediate_size": 48, "num_hidden_layers": 5,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
           "sliding_window": WINDOW,
           "rope_parameters": {"full_attention": YARN,
                               "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}}
TINY_OLMO3 = {"vocab_size": 64, "context_length": 64, "emb_dim": 32, "n_heads": 4, "n_layers": 5,
              "hidden_dim": 48, "head_dim": 8, "n_kv_groups": 2, "rope_base": 10_000.0,
              "sliding_window": WINDOW, "layer_types": None}


def hf_model(rope_parameters, seed=0):
    torch.manual_seed(seed)
    config = transformers.Olmo3Config(**{**HF_TINY, "rope_parameters": rope_parameters})
    model = transformers.Olmo3ForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:   # norms away from their start at 1
                p.normal_(1.0, 0.3)
    return model


@pytest.fixture(scope="module")
def yarn_folder(tmp_path_factory):
    model = hf_model(HF_TINY["rope_parameters"])
    folder = tmp_path_factory.mktemp("olmo3")
    model.save_pretrained(folder)
    return folder, model


def test_yarn_frequencies_are_transformers(yarn_folder):
    _, theirs = yarn_folder
    rot = theirs.model.rotary_emb
    ours = yarn_inv_freq(16, 10_000.0, 4.0, 64, 4.0, 1.0)
    np.testing.assert_allclose(ours, rot.full_attention_inv_freq.numpy(), rtol=1e-6)
    assert 0 < np.sum((ours < 1.0 / 10_000.0 ** (np.arange(0, 16, 2) / 16) * 0.99)) < 8  # some scaled, not all
    assert rot.full_attention_attention_scaling == pytest.approx(0.1 * np.log(4.0) + 1.0)


def test_load_pretrained_logits_match_transformers_with_yarn(yarn_folder):
    folder, theirs = yarn_folder
    ours = load_pretrained(folder)
    assert isinstance(ours, Olmo3Model) and not ours.weights_tied
    assert ours.cfg["layer_types"] == theirs.config.layer_types
    ids = tokens(TINY_OLMO3, batch=2, length=40)      # beyond YaRN's ramp and the window
    with torch.no_grad():
        their_logits = theirs(torch.from_numpy(ids)).logits.numpy()
    compare_logits(ours(ids).data, their_logits, np.float32, "olmo3 logits")


def test_greedy_generation_matches_transformers_generate_past_the_window(yarn_folder):
    folder, theirs = yarn_folder
    ours = load_pretrained(folder)
    prompt = tokens(TINY_OLMO3, batch=1, length=3, seed=3)
    with torch.no_grad():
        want = theirs.generate(torch.from_numpy(prompt), max_new_tokens=20, do_sample=False,
                               eos_token_id=None, pad_token_id=0).numpy()
    for use_cache in (True, False):
        got = tg.generate(ours, prompt, 20, 64, use_cache=use_cache)
        np.testing.assert_array_equal(got, want, err_msg=f"use_cache={use_cache}")


def test_every_parameter_gradient_matches_transformers_in_float64(tmp_path):
    """Plain RoPE here, so both sides can compute their tables and norms in float64."""
    theirs = hf_model({"full_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                       "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}, seed=1)
    theirs.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path, dtype=np.float64).train()
    theirs = copy.deepcopy(theirs).to(torch.float64)
    theirs.model.embed_tokens.padding_idx = None  # no zeroed gradient row for the pad token
    inv = 1.0 / 10_000.0 ** (torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    angles = torch.arange(64, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = torch.cat([angles, angles], 1).cos(), torch.cat([angles, angles], 1).sin()
    rot = theirs.model.rotary_emb
    rot.forward = types.MethodType(lambda self, x, pos, kind: (cos[pos], sin[pos]), rot)
    for module in theirs.modules():
        if type(module).__name__ == "Olmo3RMSNorm":
            def rms(self, x):
                return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))
            module.forward = types.MethodType(rms, module)
    ids, targets = tokens(TINY_OLMO3, length=11), tokens(TINY_OLMO3, length=11, seed=1)
    logits, grads = loss_and_grads(ours, ids, targets)
    t_logits, t_grads = torch_loss_and_grads(theirs, ids, targets, logits_of=lambda out: out.logits)
    compare_logits(logits, t_logits, np.float64, "olmo3 logits")
    names = {book: hf for hf, (book, _) in expected_shapes(ours.cfg, "weight", OLMO3_HF_TO_BOOK).items()}
    compare_grads(grads, t_grads, names, np.float64, "olmo3")


def test_save_pretrained_hf_writes_what_transformers_reads(tmp_path):
    tg.manual_seed(2)
    cfg = {**TINY_OLMO3, "rope_yarn": {"factor": 4.0, "original_context_length": 16}}
    ours = Olmo3Model(cfg)
    save_pretrained_hf(ours, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(theirs).__name__ == "Olmo3ForCausalLM"
    ids = tokens(TINY_OLMO3, length=30)
    with torch.no_grad():
        their_logits = theirs(torch.from_numpy(ids)).logits.numpy()
    compare_logits(ours(ids).data, their_logits, np.float32, "olmo3 saved")
    assert load_pretrained(tmp_path).cfg["rope_yarn"]["factor"] == 4.0


def test_kv_cache_decode_equals_the_full_forward_and_keeps_only_the_window():
    tg.manual_seed(4)
    model = Olmo3Model(TINY_OLMO3).to(np.float64).eval()
    ids = tokens(TINY_OLMO3, batch=2, length=20, seed=5)
    with tg.no_grad():
        full = model(ids).data
    stepped, cache = decode_through_cache(model, ids, prefill=6)
    np.testing.assert_allclose(stepped, full, rtol=1e-12, atol=1e-12)
    kept = [layer.k.shape[2] for layer in cache.layers]
    assert kept == [WINDOW - 1] * 3 + [64] + [WINDOW - 1], kept


def test_training_steps_lower_the_loss():
    tg.manual_seed(0)
    model = Olmo3Model(TINY_OLMO3)
    losses = train_steps(model, tokens(TINY_OLMO3, batch=2, length=14, seed=6))
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("change,named", [
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"attention_bias": True}, "attention_bias"),
    ({"rope_parameters": {"full_attention": {**YARN, "mscale": 1.0}}}, "mscale"),
    ({"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 2.0}}}, "linear"),
    ({"layer_types": ["full_attention"] * 2}, "layer_types"),
])
def test_bad_configs_are_refused_by_name(yarn_folder, tmp_path, change, named):
    folder, _ = yarn_folder
    config = {**json.loads((folder / "config.json").read_text()), **change}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").symlink_to(folder / "model.safetensors")
    with pytest.raises(WeightsError, match=named):
        load_pretrained(tmp_path)


def test_the_7b_config_counts_seven_billion_parameters():
    cfg = OLMO3_CONFIGS["7B"]
    assert cfg["layer_types"].count("full_attention") == 8
    n = sum(int(np.prod(shape)) for _, shape in
            expected_shapes({**cfg, "tie_weights": False}, "weight", OLMO3_HF_TO_BOOK).values())
    assert 7.0e9 < n < 7.5e9, n
