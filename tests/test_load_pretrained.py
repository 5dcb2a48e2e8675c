"""`tinygpt.weights.load_pretrained` against transformers: tiny random Qwen3ForCausalLM and
LlamaForCausalLM (Llama with rope type llama3) saved with save_pretrained (one file, sharded,
bf16), loaded, and compared: logits (1e-4 of the largest in float32, 1e-10 in float64), every
parameter gradient of a cross-entropy loss, greedy generation of 20 tokens against their
`generate`. Also: GPT-2 directories, refusals that name the problem, and peak memory."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import transformers

import tinygpt as tg
from modern_models import (TINY_LLAMA, TINY_QWEN3, check_generation, compare_grads, compare_logits, exact_float64,
                           loss_and_grads, randomize_norms, tokens, torch_loss_and_grads)
from tinygpt.model import GPTModel, Llama3Model, Qwen3Model
from tinygpt.weights import WeightsError, load_pretrained, save_pretrained, save_pretrained_hf
from tinygpt.weights.hf import expected_shapes
from tinygpt.weights.safetensors_io import read_header, save_safetensors

transformers.logging.set_verbosity_error()
LOGITS = lambda out: out.logits  # noqa: E731

QWEN3 = dict(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=40,
             rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
             tie_word_embeddings=False)
LLAMA = dict(vocab_size=50, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=40,
             rms_norm_eps=1e-5, tie_word_embeddings=True,
             rope_parameters={"rope_type": "llama3", "rope_theta": 500.0, "factor": 8.0,
                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 32})
ARCH = {"qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, QWEN3, Qwen3Model),
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, LLAMA, Llama3Model)}


def hf_model(kind, seed=0):
    config_cls, model_cls, kwargs, _ = ARCH[kind]
    torch.manual_seed(seed)
    # sdpa: their "eager" attention takes its softmax in float32 whatever the dtype; sdpa keeps it
    model = model_cls(config_cls(**kwargs, attn_implementation="sdpa")).eval()
    with torch.no_grad():  # norms start at 1: make them differ so a skipped or swapped one shows
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def book_to_hf_names(model, kind):
    """{our parameter name: transformers' name} from the loader's own table."""
    norm = "scale" if kind == "qwen3" else "weight"
    want = expected_shapes({**model.cfg, "head_dim": model.trf_blocks[0].att.head_dim}, norm)
    return {book: hf for hf, (book, _) in want.items()}


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
@pytest.mark.parametrize("dtype,shard", [(np.float32, None), (np.float64, "3KB")])
def test_logits_gradients_and_generation_match_transformers(tmp_path, kind, dtype, shard):
    theirs = hf_model(kind)
    theirs.save_pretrained(tmp_path, **({"max_shard_size": shard} if shard else {}))
    assert (tmp_path / "model.safetensors.index.json").exists() == bool(shard)
    ours = load_pretrained(tmp_path, dtype=dtype)
    assert type(ours) is ARCH[kind][3] and not ours.training
    assert ours.weights_tied == (kind == "llama")
    if dtype == np.float64:
        theirs = exact_float64(theirs.to(torch.float64), ours.trf_blocks[0].att.head_dim,
                               ours.cfg["rope_base"], ours.cfg["context_length"], ours.cfg.get("rope_freq"))
    ids, targets = tokens(ours.cfg, length=30), tokens(ours.cfg, length=30, seed=1)
    logits, grads = loss_and_grads(ours, ids, targets)
    t_logits, t_grads = torch_loss_and_grads(theirs, ids, targets, LOGITS)
    compare_logits(logits, t_logits, dtype, f"{kind} logits")
    compare_grads(grads, t_grads, book_to_hf_names(ours, kind), dtype, kind)

    prompt = tokens(ours.cfg, batch=1, length=4, seed=2)
    for hf_cache in (True, False):
        want = theirs.generate(torch.from_numpy(prompt), max_new_tokens=20, do_sample=False,
                               use_cache=hf_cache).numpy()
        check_generation(ours, want, prompt, ours.cfg["context_length"])


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_bf16_weights_are_widened_to_float32(tmp_path, kind):
    theirs = hf_model(kind, seed=3)
    theirs.to(torch.bfloat16).save_pretrained(tmp_path)
    entries, _, _ = read_header(tmp_path / "model.safetensors")
    assert {e["tag"] for e in entries.values()} == {"BF16"}
    theirs.to(torch.float32)  # the bf16-rounded values, now in float32
    ours = load_pretrained(tmp_path)
    ids = tokens(ours.cfg, length=9, seed=4)
    with tg.no_grad():
        got = ours(ids).data
    with torch.no_grad():
        want = theirs(torch.from_numpy(ids)).logits.numpy()
    compare_logits(got, want, np.float32, f"{kind} bf16")


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_save_pretrained_hf_is_read_by_transformers_and_load_pretrained(tmp_path, kind):
    tg.manual_seed(5)
    cfg = {**(TINY_QWEN3 if kind == "qwen3" else TINY_LLAMA), "tie_weights": kind == "llama"}
    model = randomize_norms(ARCH[kind][3](cfg)).eval()
    save_pretrained_hf(model, tmp_path)
    theirs = ARCH[kind][1].from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    ids = tokens(cfg, length=9, seed=6)
    with tg.no_grad():
        ours = model(ids).data
    with torch.no_grad():
        compare_logits(ours, theirs(torch.from_numpy(ids)).logits.numpy(), np.float32, f"{kind} saved")
    back = load_pretrained(tmp_path)
    assert back.weights_tied == model.weights_tied
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_gpt2_directories_load_through_load_gpt2(tmp_path):
    tg.manual_seed(0)
    model = GPTModel({"vocab_size": 40, "context_length": 8, "emb_dim": 8, "n_heads": 2,
                      "n_layers": 1, "drop_rate": 0.0, "qkv_bias": True}).eval()
    save_pretrained(model, tmp_path)
    loaded = load_pretrained(tmp_path)
    assert isinstance(loaded, GPTModel)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_gpt2_model_names_go_to_load_gpt2(monkeypatch):
    calls = []
    monkeypatch.setattr("tinygpt.weights.hf.load_gpt2", lambda name, dtype: calls.append((name, dtype)))
    load_pretrained("gpt2-medium (355M)", dtype=np.float64)
    assert calls == [("gpt2-medium (355M)", np.float64)]


def test_refusals_name_the_problem(tmp_path):
    hf_model("qwen3").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_key_value_heads": 4}))
    with pytest.raises(WeightsError, match=r"config\.json: num_key_value_heads is 4 but model\.layers\.0\."
                                           r"self_attn\.k_proj\.weight has shape \(16, 16\), which "
                                           r"implies num_key_value_heads 2 of head_dim 8$"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(WeightsError, match=r"num_hidden_layers is 3 but the weights hold blocks 0\.\.1"):
        load_pretrained(tmp_path)
    header, _, _ = read_header(tmp_path / "model.safetensors")  # a shape the config contradicts
    (tmp_path / "config.json").write_text(json.dumps(config))
    tensors = {n: np.zeros(e["shape"], np.float32) for n, e in header.items()}
    tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((24, 15), np.float32)
    save_safetensors(tensors, tmp_path / "model.safetensors")
    with pytest.raises(WeightsError, match=r"up_proj\.weight: shape \(24, 15\) in model\.safetensors, "
                                           r"the config implies \(24, 16\)"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "attention_bias": True}))
    with pytest.raises(WeightsError, match="attention_bias"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "mistral"}))
    with pytest.raises(WeightsError, match="'mistral' is not supported"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(
        {**config, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}))
    with pytest.raises(WeightsError, match="RoPE type 'yarn'"):
        load_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_pretrained(tmp_path / "nowhere")


def write_constant_safetensors(path, want, tag):
    """A safetensors file of {HF name: (_, shape)} tensors all 1/128, in F32 or BF16 (0x3C00)."""
    item = {"F32": (np.float32(1 / 128), 4), "BF16": (np.uint16(0x3C00), 2)}[tag]
    header, offset = {}, 0
    for name, (_, shape) in want.items():
        nbytes = int(np.prod(shape)) * item[1]
        header[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for name, (_, shape) in want.items():
            f.write(np.full(shape, item[0]).tobytes())


PEAK_SCRIPT = textwrap.dedent("""
    import sys
    from tinygpt.weights import load_pretrained

    def status_kib(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS: the imports' peak is not ours
    before = status_kib("VmRSS")
    model = load_pretrained(sys.argv[1])
    size = sum(p.data.nbytes for p in model.parameters()) // 1024
    print(status_kib("VmHWM") - before, size)
""")



@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and ru_maxrss in KiB")
@pytest.mark.parametrize("tag, tied", [("F32", False), ("BF16", False), ("F32", True)])
def test_peak_memory_stays_near_the_model_size(tmp_path, tag, tied):
    """A ~330 MB (float32) Qwen3 directory written here: loading it grows the peak RSS of a fresh
    process by at most 1.2x the loaded parameters; with tied embeddings too (as Qwen3-0.6B and
    Llama 3.2 ship), where a head drawn and then dropped made it 1.26x at 0.6B."""
    cfg = dict(QWEN3, vocab_size=30_000, hidden_size=1024, intermediate_size=2048, num_attention_heads=8,
               num_key_value_heads=4, head_dim=128)
    book = {"vocab_size": cfg["vocab_size"], "emb_dim": 1024, "n_heads": 8, "head_dim": 128,
            "n_kv_groups": 4, "hidden_dim": 2048, "n_layers": 2, "tie_weights": tied}
    write_constant_safetensors(tmp_path / "model.safetensors", expected_shapes(book, "scale"), tag)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "qwen3", "tie_word_embeddings": tied}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path)], capture_output=True,
                         text=True, env=env, check=True).stdout.split()
    growth, size = int(out[0]), int(out[1])
    assert size > (190_000 if tied else 300_000), size
    assert growth <= 1.2 * size, f"peak RSS grew {growth} KiB loading {size} KiB of parameters"
