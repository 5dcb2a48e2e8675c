"""Every value a config file gives is type- and range-checked before anything is built from it.

A string where a number belongs, a JSON boolean where a count belongs, a float where an int
belongs, zero or negative sizes, NaN or infinite floats, a list where an object or a name belongs,
"no" for a flag (which Python's bool() reads as true), Llama 3 RoPE scaling without one of its
factors: each is a WeightsError whose one line names the file and the key, for every loader (Qwen3
and Llama through load_pretrained, GPT-2 folders through load_gpt2 and load_pretrained, a config
given to load_gpt2 as a dict, and the book's config through validate_config)."""
import json
import math
import re

import numpy as np
import pytest

from crafted_models import HONEST, write_gpt2, write_modern
from tinygpt.errors import InputError, InputKeyError, InputTypeError, TinyGPTError
from tinygpt.model import GPTModel, Llama3Model, Qwen3Model, validate_config
from tinygpt.weights import WeightsError, load_gpt2, load_pretrained

NOT_INT = r"must be an integer >= 1, got "
NOT_FLAG = r"must be true or false, got "
NOT_NUMBER = r"must be a finite number > 0, got "

# (key, lying value, what the message says after the key) for Qwen3 and Llama
MODERN_LIES = [
    ("num_hidden_layers", "2", NOT_INT + "'2'"),
    ("num_hidden_layers", 2.0, NOT_INT + "2.0"),
    ("num_hidden_layers", True, NOT_INT + "True"),
    ("vocab_size", 0, NOT_INT + "0"),
    ("vocab_size", 3e6, NOT_INT + "3000000.0"),
    ("hidden_size", -16, NOT_INT + "-16"),
    ("num_attention_heads", 0, NOT_INT + "0"),
    ("num_attention_heads", [4], NOT_INT + r"\[4\]"),
    ("num_key_value_heads", "2", NOT_INT + "'2'"),
    ("num_key_value_heads", 3, r"\(4\) must be a multiple of num_key_value_heads \(3\)"),
    ("intermediate_size", {"value": 24}, NOT_INT + r"\{'value': 24\}"),
    ("max_position_embeddings", "40", NOT_INT + "'40'"),
    ("max_position_embeddings", False, NOT_INT + "False"),
    ("rms_norm_eps", float("nan"), NOT_NUMBER + "nan"),
    ("rms_norm_eps", "1e-6", NOT_NUMBER + "'1e-6'"),
    ("rms_norm_eps", 0, NOT_NUMBER + "0"),
    ("rope_theta", float("inf"), NOT_NUMBER + "inf"),
    ("rope_theta", -1.0, NOT_NUMBER + "-1.0"),
    ("tie_word_embeddings", "no", NOT_FLAG + "'no'"),
    ("tie_word_embeddings", 0, NOT_FLAG + "0"),
    ("attention_bias", "false", NOT_FLAG + "'false'"),
    ("mlp_bias", 1, NOT_FLAG + "1"),
    ("hidden_act", ["silu"], r"must be a string, got \['silu'\]"),
    ("torch_dtype", ["bfloat16"], r"must be a string \(one of .*\), got \['bfloat16'\]"),
    ("torch_dtype", "int8", r"must be a string \(one of .*float32.*\), got 'int8'"),
    ("dtype", {"name": "float32"}, r"must be a string \(one of .*\), got \{'name'"),
    ("rope_scaling", [["rope_type", "llama3"]], r"must be a JSON object, got \[\["),
    ("rope_parameters", "default", r"must be a JSON object, got 'default'"),
    ("model_type", ["qwen3"], r"must be a string, got \['qwen3'\]"),
    ("eos_token_id", [1, "2"], r"must be a token id \(an integer >= 0\) or a list of them, got \[1, '2'\]"),
    ("bos_token_id", -1, r"must be a token id"),
    ("use_cache", "true", NOT_FLAG + "'true'"),
    ("attention_dropout", 1.5, r"must be a probability in \[0, 1\], got 1.5"),
    ("sliding_window", "4096", r"must be an integer >= 0, got '4096'"),
    ("initializer_range", float("nan"), r"must be a finite number, got nan"),
]


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_honest_folders_load(tmp_path, kind):
    """The folders the lies below start from load, so each refusal is the lie's doing."""
    model = load_pretrained(write_modern(tmp_path, kind))
    assert isinstance(model, {"qwen3": Qwen3Model, "llama": Llama3Model}[kind])
    assert model.cfg["n_layers"] == 2 and model.weights_tied == (kind == "llama")


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
@pytest.mark.parametrize("key,value,message", MODERN_LIES, ids=lambda v: repr(v)[:20])
def test_modern_config_values_are_checked(tmp_path, kind, key, value, message):
    folder = write_modern(tmp_path, kind, **{key: value})
    with pytest.raises(WeightsError) as info:
        load_pretrained(folder)
    text = str(info.value)
    assert text.startswith(f"{folder / 'config.json'}: ") and key in text and "\n" not in text, text
    assert re.search(message, text), text


LLAMA3_ROPE = HONEST["llama"]["rope_scaling"]


@pytest.mark.parametrize("change,key,message", [
    ({"factor": ...}, "factor", "is missing"),
    ({"low_freq_factor": ...}, "low_freq_factor", "is missing"),
    ({"original_max_position_embeddings": ...}, "original_max_position_embeddings", "is missing"),
    ({"factor": "8"}, "factor", NOT_NUMBER + "'8'"),
    ({"factor": float("nan")}, "factor", NOT_NUMBER + "nan"),
    ({"high_freq_factor": True}, "high_freq_factor", NOT_NUMBER + "True"),
    ({"high_freq_factor": 1.0}, "high_freq_factor", r"\(1.0\) must be larger than low_freq_factor \(1.0\)"),
    ({"original_max_position_embeddings": 32.0}, "original_max_position_embeddings", NOT_INT + "32.0"),
    ({"rope_type": 3}, "rope_type", r"must be a string, got 3"),
])
@pytest.mark.parametrize("layout", ["rope_scaling", "rope_parameters"])
def test_llama3_rope_scaling_needs_each_of_its_values(tmp_path, change, key, message, layout):
    rope = {k: v for k, v in {**LLAMA3_ROPE, **change}.items() if v is not ...}
    folder = write_modern(tmp_path, "llama", **{"rope_scaling": ..., layout: rope})
    with pytest.raises(WeightsError, match=rf"config\.json: {layout}\.{key} {message}"):
        load_pretrained(folder)


def test_rope_theta_inside_rope_parameters_is_checked_there(tmp_path):
    folder = write_modern(tmp_path, "qwen3", rope_theta=...,
                          rope_parameters={"rope_type": "default", "rope_theta": "1e4"})
    with pytest.raises(WeightsError, match=r"rope_parameters\.rope_theta must be a finite number"):
        load_pretrained(folder)
    write_modern(tmp_path, "qwen3", rope_theta=...)
    with pytest.raises(WeightsError, match=r"config\.json: rope_theta is missing"):
        load_pretrained(folder)


def test_a_flag_read_as_true_is_refused_not_obeyed(tmp_path):
    """"no" is truthy: before, "tie_word_embeddings": "no" built a tied model from untied weights."""
    folder = write_modern(tmp_path, "qwen3", tie_word_embeddings="no")
    with pytest.raises(WeightsError, match="tie_word_embeddings must be true or false, got 'no'"):
        load_pretrained(folder)
    write_modern(tmp_path, "qwen3", tie_word_embeddings=None)  # null: the default (untied)
    assert load_pretrained(folder).weights_tied is False


GPT2_LIES = [
    ("n_layer", "2", NOT_INT + "'2'"),
    ("n_layer", 10 ** 9 + 0.5, NOT_INT),
    ("n_embd", 8.0, NOT_INT + "8.0"),
    ("n_head", 0, NOT_INT + "0"),
    ("n_head", 3, r"\(8\) must be a multiple of n_head \(3\)"),
    ("vocab_size", True, NOT_INT + "True"),
    ("n_positions", -8, NOT_INT + "-8"),
    ("n_inner", "32", NOT_INT + "'32'"),
    ("layer_norm_epsilon", float("nan"), NOT_NUMBER + "nan"),
    ("activation_function", ["gelu_new"], r"must be a string, got \['gelu_new'\]"),
    ("scale_attn_weights", "yes", NOT_FLAG + "'yes'"),
    ("tie_word_embeddings", "no", NOT_FLAG + "'no'"),
    ("torch_dtype", ["float32"], r"must be a string \(one of .*\), got \['float32'\]"),
    ("resid_pdrop", 2.0, r"must be a probability in \[0, 1\], got 2.0"),
    ("attn_pdrop", float("inf"), r"must be a finite number, got inf"),
    ("model_type", 2, r"must be a string, got 2"),
    ("n_ctx", "8", NOT_INT + "'8'"),
    ("eos_token_id", 50256.0, r"must be a token id"),
    ("summary_first_dropout", -0.1, r"must be a probability in \[0, 1\]"),
]


@pytest.mark.parametrize("key,value,message", GPT2_LIES, ids=lambda v: repr(v)[:20])
@pytest.mark.parametrize("loader", [load_gpt2, load_pretrained])
def test_gpt2_config_values_are_checked(tmp_path, key, value, message, loader):
    folder = write_gpt2(tmp_path, **{key: value})
    with pytest.raises(WeightsError) as info:
        loader(folder)
    text = str(info.value)
    assert text.startswith(f"{folder / 'config.json'}: ") and key in text, text
    assert re.search(message, text), text


def test_gpt2_config_given_as_a_dict_is_checked_by_key(tmp_path):
    folder = write_gpt2(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    with pytest.raises(WeightsError, match=r"^config: n_head must be an integer >= 1, got '2'$"):
        load_gpt2(folder / "model.safetensors", config={**config, "n_head": "2"})
    book = {"vocab_size": 40, "context_length": 8, "emb_dim": 8, "n_heads": 2, "n_layers": "2",
            "qkv_bias": True}
    with pytest.raises(InputError, match=r"^config: GPT config key 'n_layers' must be a positive int, got '2'$"):
        load_gpt2(folder / "model.safetensors", config=book)
    (tmp_path / "book.json").write_text(json.dumps({**book, "n_layers": 2, "qkv_bias": "yes"}))
    with pytest.raises(InputError, match=r"book\.json: GPT config key 'qkv_bias' must be True or False"):
        load_gpt2(folder / "model.safetensors", config=tmp_path / "book.json")


BOOK = {"vocab_size": 40, "context_length": 8, "emb_dim": 8, "n_heads": 2, "n_layers": 1,
        "drop_rate": 0.0, "qkv_bias": False}


@pytest.mark.parametrize("key,value,error", [
    ("n_layers", "1", InputError), ("n_layers", True, InputError), ("n_layers", 1.0, InputError),
    ("emb_dim", 0, InputError), ("vocab_size", -1, InputError), ("n_heads", np.float64(2), InputError),
    ("context_length", None, InputError), ("drop_rate", float("nan"), InputError),
    ("drop_rate", math.inf, InputError), ("drop_rate", True, InputError), ("drop_rate", "0.1", InputError),
    ("qkv_bias", "no", InputError), ("qkv_bias", 0, InputError), ("tie_weights", "yes", InputError),
    ("n_heads", 3, InputError), ("bias", True, InputError),
])
def test_validate_config_checks_every_value(key, value, error):
    with pytest.raises(error) as info:
        validate_config({**BOOK, key: value}, where="run/config.json")
    assert str(info.value).startswith("run/config.json: ") and repr(key)[1:-1] in str(info.value)
    with pytest.raises(error):
        GPTModel({**BOOK, key: value})


def test_validate_config_errors_are_tinygpt_errors_without_where():
    with pytest.raises(InputKeyError, match="missing key"):
        validate_config({k: v for k, v in BOOK.items() if k != "n_layers"})
    with pytest.raises(InputTypeError, match="must be a dict, got list"):
        validate_config([BOOK])
    assert validate_config(BOOK) == {**BOOK, "tie_weights": False}
    assert issubclass(WeightsError, TinyGPTError)
