"""Quantized weights on disk and in memory: `tinygpt quantize` -> save -> load is exact; crafted
q8 files are refused with one line; --dtype / --quantize on the command line; and the memory a
loaded bf16 / q8 model takes against float32 (VmHWM of a child process)."""
import json
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tinygpt as tg
from quant_models import MODELS, bf16_folder, write_safetensors
from tinygpt.cli.quantize import save_quantized
from tinygpt.model import generate
from tinygpt.errors import InputError
from tinygpt.kernels import quant_gemv as K
from tinygpt.quant import QuantError, QuantLinear, decode_bytes, quantized_format
from tinygpt.quant.stats import size
from tinygpt.weights import load_pretrained, save_pretrained_hf
from tinygpt.weights.hf import expected_shapes
from tinygpt.weights.safetensors_io import load_safetensors, read_header


def tinygpt(*args):
    return subprocess.run([sys.executable, "-m", "tinygpt", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_quantize_save_load_round_trip_is_exact(tmp_path):
    folder = bf16_folder(tmp_path, "llama", seed=5)
    model = load_pretrained(folder, quantize="q8")
    out = save_quantized(folder, tmp_path / "q8")
    entries, metadata, _ = read_header(out / "model.safetensors")
    assert metadata["tinygpt_quantization"] == "q8"
    assert entries["model.layers.0.mlp.up_proj.weight"]["tag"] == "I8"
    assert entries["model.layers.0.mlp.up_proj.weight.q8_scales"]["shape"] == (64, 1)
    again = load_pretrained(out)  # no quantize=: the folder says q8
    for (name, a), (_, b) in zip(model.named_modules(), again.named_modules()):
        if isinstance(a, QuantLinear):
            assert np.array_equal(a.weight.data, b.weight.data) and np.array_equal(a.weight.scales, b.weight.scales), name
    ids = np.array([[2, 7, 1, 8, 2, 8]])
    with tg.no_grad():
        assert np.array_equal(model(ids).data, again(ids).data)
    assert np.array_equal(generate(model, ids, 8, 32), generate(again, ids, 8, 32))
    with pytest.raises(QuantError, match="holds q8 weights"):
        load_pretrained(out, dtype="bf16")


def _crafted(tmp_path, change, fmt="q8", metadata=None):
    """A `fmt` folder of the tiny Qwen3 whose tensors `change(tensors)` edits; returns the folder."""
    folder = bf16_folder(tmp_path, "qwen3", seed=6)
    good = save_quantized(folder, tmp_path / "good", fmt)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    arrays = load_safetensors(good / "model.safetensors", widen_bf16=False)
    tags = {np.dtype(np.int8): "I8", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
            np.dtype(np.uint16): "BF16"}
    tensors = {n: (tags[a.dtype], np.array(a)) for n, a in arrays.items()}
    change(tensors)
    write_safetensors(bad / "model.safetensors", tensors, metadata or {"tinygpt_quantization": fmt})
    return bad


NAME = "model.layers.1.self_attn.k_proj.weight"


@pytest.mark.parametrize("change, message", [
    (lambda t: t.update({NAME + ".q8_scales": ("F32", np.ones((16, 2), np.float32))}),
     r"k_proj.weight.q8_scales is F32 \(16, 2\); q8 .* needs F32 \(16, 1\)"),
    (lambda t: t.update({NAME + ".q8_scales": ("F16", np.ones((16, 1), np.float16))}),
     r"q8_scales is F16 .* needs F32"),
    (lambda t: t.pop(NAME + ".q8_scales"), r"k_proj.weight has no scales"),
    (lambda t: t.update({NAME: ("I8", np.ones((16, 48), np.int8)),
                         NAME + ".q8_scales": ("F32", np.ones((16, 1), np.float32))}),
     r"k_proj.weight has shape \(16, 48\): not \(rows, a multiple of 32\)"),
    (lambda t: t.update({"model.norm.weight.q8_scales": ("F32", np.ones((1, 1), np.float32))}),
     r"model.norm.weight is F32, not I8"),
])
def test_crafted_q8_files_are_refused_in_one_line(tmp_path, change, message):
    bad = _crafted(tmp_path, change)
    with pytest.raises(QuantError, match=message):
        load_pretrained(bad)
    out = tinygpt("generate", "--model", bad, "--prompt", "hi")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "error:" in out.stderr


def test_bf16_save_load_round_trip_keeps_the_bits(tmp_path):
    folder = bf16_folder(tmp_path, "llama", seed=9)
    out = save_quantized(folder, tmp_path / "bf16", "bf16")
    entries, metadata, _ = read_header(out / "model.safetensors")
    assert metadata["tinygpt_quantization"] == "bf16"
    assert entries["model.layers.0.mlp.up_proj.weight"]["tag"] == "BF16"
    assert entries["model.norm.weight"]["tag"] == "F32"
    source = load_safetensors(folder / "model.safetensors", widen_bf16=False)
    saved = load_safetensors(out / "model.safetensors", widen_bf16=False)
    assert sorted(source) == sorted(saved)
    for name, bits in source.items():   # the weights' bits as they were; norms widened exactly
        want = bits if saved[name].dtype == np.uint16 else K.bf16_to_float32_ref(bits)
        assert np.array_equal(saved[name], want), name
    model, again = load_pretrained(folder, dtype="bf16"), load_pretrained(out)  # no flag: bf16
    assert quantized_format(again) == "bf16"
    ids = np.array([[2, 7, 1, 8, 2, 8]])
    with tg.no_grad():
        assert np.array_equal(model(ids).data, again(ids).data)
    assert np.array_equal(generate(model, ids, 8, 32), generate(again, ids, 8, 32))
    q8 = load_pretrained(out, quantize="q8")  # q8 from the saved bits = q8 from the source's
    with tg.no_grad():
        assert np.array_equal(q8(ids).data, load_pretrained(folder, quantize="q8")(ids).data)


def test_a_float32_folder_saved_as_bf16_holds_its_rounded_weights(tmp_path):
    tg.manual_seed(3)
    cls, cfg = MODELS["qwen3"]
    save_pretrained_hf(cls(cfg), tmp_path / "f32")
    out = tinygpt("quantize", "--model", tmp_path / "f32", "--out", tmp_path / "bf16", "--dtype", "bf16")
    assert out.returncode == 0 and "MB of bf16 weights" in out.stdout, out.stderr
    floats = load_safetensors(tmp_path / "f32" / "model.safetensors")
    saved = load_safetensors(tmp_path / "bf16" / "model.safetensors", widen_bf16=False)
    for name, w in floats.items():
        assert np.array_equal(saved[name], K.float32_to_bf16_ref(w) if w.ndim == 2 else w), name
    for args, message in [(["--dtype", "fp8"], "tinygpt quantize writes bf16"),
                          (["--dtype", "bf16", "--quantize", "q8"], "not both")]:
        out = tinygpt("quantize", "--model", tmp_path / "f32", "--out", tmp_path / "x", *args)
        assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1


BF16_NAME = "model.layers.0.mlp.down_proj.weight"


@pytest.mark.parametrize("change, metadata, message", [
    (lambda t: t.update({BF16_NAME: ("F32", np.ones((32, 64), np.float32))}), None,
     r"down_proj.weight is F32, but the files say they hold bf16"),
    (lambda t: t.update({BF16_NAME: ("I8", np.ones((32, 64), np.int8))}), None,
     r"down_proj.weight is I8, but the files say they hold bf16"),
    (lambda t: t.update({BF16_NAME: ("BF16", np.ones((32, 32), np.uint16))}), None,
     r"down_proj.weight: shape \(32, 32\) .* the config implies \(32, 64\)"),
    (lambda t: t.update({BF16_NAME + ".q8_scales": ("F32", np.ones((32, 2), np.float32))}), None,
     r"down_proj.weight.q8_scales is F32, but the files say they hold bf16"),
    (lambda t: t.update({"model.layers.0.mlp.extra": ("F32", np.ones(32, np.float32))}), None,
     r"unexpected model.layers.0.mlp.extra"),
    (lambda t: None, {"tinygpt_quantization": "bf8"}, r"hold \['bf8'\] weights; tinygpt reads bf16 or q8"),
])
def test_crafted_bf16_files_are_refused_in_one_line(tmp_path, change, metadata, message):
    bad = _crafted(tmp_path, change, "bf16", metadata)
    with pytest.raises(InputError, match=message):
        load_pretrained(bad)
    out = tinygpt("generate", "--model", bad, "--prompt", "hi")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "error:" in out.stderr


def test_cli_generates_with_bf16_and_q8_weights(tmp_path):
    from tokenizer_files import write_qwen3_tokenizer_json
    folder = bf16_folder(tmp_path, "qwen3", seed=7, vocab_size=320)  # the tokenizer's 316 ids fit
    write_qwen3_tokenizer_json(folder / "tokenizer.json")
    from tinygpt.tokenizer import Qwen3Tokenizer
    ids = np.array([Qwen3Tokenizer(folder / "tokenizer.json", apply_chat_template=False).encode("Once upon")])
    q8 = save_quantized(folder, tmp_path / "q8")
    for args, model in [(["--dtype", "bf16"], load_pretrained(folder, dtype="bf16")),
                        ([], load_pretrained(q8)), (["--quantize", "q8", "--stats"], load_pretrained(q8))]:
        want = generate(model, ids, 5, 32)[0, ids.shape[1]:]
        out = tinygpt("generate", "--model", q8 if not args or args[0] == "--quantize" else folder,
                      "--prompt", "Once upon", "--max-new-tokens", 5, *args)
        assert out.returncode == 0, out.stderr
        text = Qwen3Tokenizer(folder / "tokenizer.json").decode([int(t) for t in want])
        assert out.stdout.rstrip("\n") == "Once upon" + text.split("<|endoftext|>")[0]
    # --stats: one line on stderr (stdout above is the text alone), the weights' bytes as counted
    got = re.search(r"^stats: prompt (\d+) tokens in [\d.]+ s \([\d.]+ tok/s\); then (\d+) tokens "
                       r"in [\d.]+ s: [\d.]+ tok/s, (.+) of weights a token read at [\d.]+ GB/s$", out.stderr, re.M)
    assert got, out.stderr
    assert (int(got[1]), got[3]) == (ids.shape[1], size(decode_bytes(model))) and 1 <= int(got[2]) <= 4
    for args, message in [(["--dtype", "fp8"], "--dtype: 'fp8' is not one of float32, bf16"),
                          (["--quantize", "q4"], "--quantize: 'q4' is not one of q8")]:
        out = tinygpt("chat", "--model", folder, *args)
        assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1
    out = tinygpt("quantize", "--model", "gpt2", "--out", tmp_path / "x")
    assert out.returncode == 2 and "writes Qwen3 and Llama 3 models" in out.stderr


PEAK = textwrap.dedent("""
    import sys
    from tinygpt.weights import load_pretrained, save_pretrained_hf

    def status_kib(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) starts at the current RSS: the imports' peak is not ours
    before = status_kib("VmRSS")
    kind = sys.argv[2]
    model = load_pretrained(sys.argv[1], **({"dtype": "bf16"} if kind == "bf16" else
                                            {"quantize": "q8"} if kind == "q8" else {}))
    print(status_kib("VmHWM") - before, status_kib("VmRSS") - before)
""")


def test_loaded_bf16_and_q8_models_take_a_half_and_about_a_quarter_of_float32(tmp_path):
    # about 100 MB of bf16, so that the load's fixed overhead (~8 MB) shows little
    cfg = {**MODELS["qwen3"][1], "vocab_size": 32768, "emb_dim": 1024, "hidden_dim": 2048,
           "n_heads": 16, "head_dim": 64, "n_kv_groups": 8, "n_layers": 2}
    shapes = expected_shapes(cfg, "scale")
    rng = np.random.default_rng(0)
    # random bf16 bits of values in +-[1/128, 1/64): finite, and q8 blocks of mixed magnitude
    tensors = {hf: ("BF16", rng.integers(0x3C00, 0x3C80, shape, dtype=np.uint16)
                    | (rng.integers(0, 2, shape, dtype=np.uint16) << np.uint16(15)))
               for hf, (_, shape) in shapes.items()}
    folder = tmp_path / "model"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors", tensors)
    src = bf16_folder(tmp_path, "qwen3")
    config = json.loads((src / "config.json").read_text())
    config.update(vocab_size=32768, hidden_size=1024, intermediate_size=2048, num_attention_heads=16,
                  head_dim=64, num_key_value_heads=8, num_hidden_layers=2)
    (folder / "config.json").write_text(json.dumps(config))
    file_mb = (folder / "model.safetensors").stat().st_size / 2**20
    peak = {}
    for kind in ("float32", "bf16", "q8"):
        out = subprocess.run([sys.executable, "-c", PEAK, folder, kind], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        peak[kind] = [int(v) / 1024 for v in out.stdout.split()]  # MiB: peak, resident after
    print(f"file {file_mb:.1f} MiB; peak / resident MiB: {peak}")
    f32 = peak["float32"][1]
    assert 1.8 * file_mb < f32 < 2.3 * file_mb           # float32: twice the bf16 file
    assert peak["bf16"][0] < 1.2 * file_mb                 # the bound: 1.2x the file
    assert 0.4 * f32 < peak["bf16"][1] < 0.6 * f32          # about half
    assert 0.2 * f32 < peak["q8"][1] < 0.36 * f32           # 1.125 / 4 = 0.28 of float32
    # q8 from bf16 is quantized as it is read, a chunk of rows at a time: the peak stays below
    # what holding the largest bf16 tensor (the 64 MiB table) whole beside the result would take
    table_mib = 32768 * 1024 * 2 / 2**20
    assert peak["q8"][0] < peak["q8"][1] + table_mib / 2
