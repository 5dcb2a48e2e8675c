"""GPT-2 weights in and out (tinygpt.weights), against Hugging Face transformers and PyTorch as
test-only oracles: logits agree within 1e-4 relative in float32 after loading a transformers
GPT2LMHeadModel, after saving back into transformers, and after loading a torch.save()d state
dict of the book's PyTorch model. Unsafe or inconsistent files are refused with errors that name
the problem."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from reference import torch_gpt as ref

import tinygpt
from tinygpt.model import GPTModel
from tinygpt.weights import (
    SafetensorsError,
    UnsafePickleError,
    WeightsError,
    load_gpt2,
    load_safetensors,
    load_torch_state_dict,
    save_pretrained,
    save_safetensors,
)
from tinygpt.weights.gpt2 import _to_book, _to_hf, hf_config_to_cfg, strip_prefix
from helpers import TOLERANCES

TINY = {"n_layer": 2, "n_head": 4, "n_embd": 64, "n_positions": 32, "vocab_size": 257}
BOOK_TINY = {"vocab_size": 257, "context_length": 32, "emb_dim": 64, "n_heads": 4, "n_layers": 2,
             "drop_rate": 0.0, "qkv_bias": False}


def assert_logits_close(actual, expected, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    assert actual.dtype == np.float32, f"{what}: dtype {actual.dtype}"
    diff, scale = float(np.abs(actual - expected).max()), float(np.abs(expected).max())
    bound = TOLERANCES["model"][np.dtype(np.float32)]["atol"]
    assert diff <= bound * scale, f"{what}: max|diff| {diff:.3e} > {bound} * {scale:.3e}"


def randomize(module, seed):
    """Weights far from the default init (std 0.02 would make every logit nearly equal)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1 and ("ln" in name or "norm" in name) and ("weight" in name or "scale" in name):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))
    return module


def tinygpt_logits(model, ids):
    with tinygpt.no_grad():
        return model(ids).data


def torch_logits(model, ids):
    with torch.no_grad():
        out = model(torch.from_numpy(ids))
    return (out.logits if hasattr(out, "logits") else out).numpy()


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(0, TINY["vocab_size"], size=(2, TINY["n_positions"]))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A transformers GPT2LMHeadModel with a tiny random config, saved with save_pretrained."""
    cfg = transformers.GPT2Config(**TINY, bos_token_id=None, eos_token_id=None)
    model = randomize(transformers.GPT2LMHeadModel(cfg), seed=1).eval()
    path = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    model.save_pretrained(path)
    return path, model


def test_load_hf_directory_matches_transformers(hf_dir, ids):
    path, hf = hf_dir
    model = load_gpt2(path)
    assert model.weights_tied and model.cfg["qkv_bias"] and not model.training
    assert_logits_close(tinygpt_logits(model, ids), torch_logits(hf, ids), "HF dir -> tinygpt")


def test_original_hub_layout_loads(hf_dir, ids, tmp_path):
    """The files on the Hub predate the 'transformer.' prefix and carry the causal-mask buffers
    h.{i}.attn.bias / masked_bias, which are not weights."""
    path, hf = hf_dir
    sd = strip_prefix(load_safetensors(path / "model.safetensors"))
    assert not any(k.startswith("transformer.") for k in sd)
    for i in range(TINY["n_layer"]):
        sd[f"h.{i}.attn.bias"] = np.tril(np.ones((32, 32), np.float32))[None, None]
        sd[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    (tmp_path / "hub").mkdir()
    save_safetensors(sd, tmp_path / "hub" / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "hub" / "config.json").write_text((path / "config.json").read_text())
    model = load_gpt2(tmp_path / "hub")
    assert all(p.data.flags.c_contiguous and p.dtype == np.float32 for p in model.parameters())
    assert_logits_close(tinygpt_logits(model, ids), torch_logits(hf, ids), "Hub layout -> tinygpt")


def test_load_single_safetensors_with_config_or_shapes(hf_dir, ids):
    path, hf = hf_dir
    expected = torch_logits(hf, ids)
    with_path = load_gpt2(path / "model.safetensors", config=path / "config.json")
    with_dict = load_gpt2(path / "model.safetensors",
                          config=json.loads((path / "config.json").read_text()))
    inferred = load_gpt2(path / "model.safetensors", n_heads=4)  # emb 64 is no GPT-2 size
    for model, what in [(with_path, "config path"), (with_dict, "config dict"), (inferred, "shapes")]:
        assert_logits_close(tinygpt_logits(model, ids), expected, f".safetensors + {what}")
    with pytest.raises(WeightsError, match="n_heads"):
        load_gpt2(path / "model.safetensors")


def test_hf_pytorch_model_bin_loads(hf_dir, ids, tmp_path):
    """torch.save(GPT2LMHeadModel.state_dict()): HF names, and lm_head.weight sharing wte's
    storage (one storage record, two tensors)."""
    path, hf = hf_dir
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    model = load_gpt2(tmp_path / "pytorch_model.bin", config=path / "config.json")
    assert model.weights_tied
    assert_logits_close(tinygpt_logits(model, ids), torch_logits(hf, ids), "pytorch_model.bin")


def test_float64_load(hf_dir, ids):
    path, hf = hf_dir
    model = load_gpt2(path, dtype=np.float64)
    out = tinygpt_logits(model, ids)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, torch_logits(hf, ids), rtol=0,
                               atol=TOLERANCES["model"][np.dtype(np.float32)]["atol"] * np.abs(out).max())


@pytest.mark.parametrize("tied", [True, False])
def test_save_pretrained_opens_in_transformers(tmp_path, ids, tied):
    """A tied model (GPT-2 style) and an untied one without qkv biases (the book's chapter-5
    pretraining config) both round-trip into GPT2LMHeadModel, and back into tinygpt."""
    tinygpt.manual_seed(7)
    cfg = {**BOOK_TINY, "qkv_bias": not tied, "tie_weights": tied}
    model = GPTModel(cfg).eval()
    for name, p in model.named_parameters():
        p.data = (np.random.default_rng(len(name)).standard_normal(p.shape) * 0.15
                  + (1.0 if name.endswith("scale") else 0.0)).astype(np.float32)
    expected = tinygpt_logits(model, ids)
    out = save_pretrained(model, tmp_path / "saved")
    hf_cfg = json.loads((out / "config.json").read_text())
    assert hf_cfg["tie_word_embeddings"] is tied and hf_cfg["n_embd"] == 64
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    assert_logits_close(torch_logits(hf, ids), expected, f"tinygpt -> transformers (tied={tied})")
    again = load_gpt2(out)
    assert again.weights_tied is tied
    assert_logits_close(tinygpt_logits(again, ids), expected, "tinygpt -> HF files -> tinygpt")
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_mapping_round_trip_is_exact(hf_dir):
    path, _ = hf_dir
    hf_sd = strip_prefix(load_safetensors(path / "model.safetensors"))
    cfg = hf_config_to_cfg(json.loads((path / "config.json").read_text()))
    back = _to_hf(_to_book(hf_sd, cfg), cfg, tied=True)
    assert sorted(back) == sorted(hf_sd)
    for name, value in hf_sd.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)


@pytest.mark.parametrize("as_checkpoint", [False, True])
def test_torch_pth_in_book_names_loads_equal(tmp_path, ids, as_checkpoint):
    """torch.save(model.state_dict()) of the book's PyTorch GPTModel (qkv_bias=False, untied
    out_head, mask buffers), or the book's {"model_state_dict", "optimizer_state_dict"} dict."""
    torch.manual_seed(3)
    twin = randomize(ref.GPTModel(BOOK_TINY), seed=3).eval()
    obj = twin.state_dict()
    if as_checkpoint:
        opt = torch.optim.AdamW(twin.parameters(), lr=4e-4, weight_decay=0.1)
        twin(torch.from_numpy(ids)).sum().backward()
        opt.step()
        twin.eval()
        obj = {"model_state_dict": twin.state_dict(), "optimizer_state_dict": opt.state_dict()}
    torch.save(obj, tmp_path / "model.pth")
    model = load_gpt2(tmp_path / "model.pth", n_heads=4)
    assert model.cfg["qkv_bias"] is False and not model.weights_tied
    assert_logits_close(tinygpt_logits(model, ids), torch_logits(twin, ids), ".pth -> tinygpt")


def test_torch_reader_dtypes_views_and_sharing(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {"f32": torch.randn(3, 5), "f64": torch.randn(2, 2, dtype=torch.float64),
               "f16": torch.randn(7, dtype=torch.float16), "i64": torch.arange(-3, 9),
               "bf16": torch.randn(4, 3, dtype=torch.bfloat16), "scalar": torch.tensor(2.5),
               "empty": torch.zeros(0, 4), "view_t": base.t(), "view_slice": base[1:, ::2],
               "param": torch.nn.Parameter(torch.ones(3))}
    torch.save({**tensors, "meta": {"step": 3, "names": ["a", "b"], "lr": (1e-3, None)}},
               tmp_path / "t.pt")
    got = load_torch_state_dict(tmp_path / "t.pt")
    for name, t in tensors.items():
        want = t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)
        assert not got[name].flags.writeable, name  # read-only views into the storages
    assert np.shares_memory(got["view_t"], got["view_slice"])  # one storage, as in torch
    assert got["meta"] == {"step": 3, "names": ["a", "b"], "lr": (1e-3, None)}


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("func, global_name", [(os.system, "system"), (eval, "builtins.eval")])
def test_malicious_pickle_is_refused_without_running(tmp_path, func, global_name):
    marker = tmp_path / "pwned"
    payload = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w')"
    torch.save({"wte.weight": torch.ones(2), "x": _Evil(func, payload)}, tmp_path / "evil.pth")
    with pytest.raises(UnsafePickleError, match=global_name):
        load_torch_state_dict(tmp_path / "evil.pth")
    with pytest.raises(UnsafePickleError):
        load_gpt2(tmp_path / "evil.pth")
    assert not marker.exists()


def test_pickle_with_unknown_class_or_raw_pickle_is_refused(tmp_path):
    torch.save({"w": torch.ones(2), "d": Path("x")}, tmp_path / "cls.pth")  # pathlib.PosixPath
    with pytest.raises(UnsafePickleError, match="pathlib"):
        load_torch_state_dict(tmp_path / "cls.pth")
    (tmp_path / "raw.pth").write_bytes(pickle.dumps({"w": 1}))  # not a torch zip archive
    with pytest.raises(ValueError, match="zip"):
        load_torch_state_dict(tmp_path / "raw.pth")


def test_save_safetensors_matches_the_reference_reader(tmp_path):
    """Non-contiguous views, float64 and int tensors and metadata read back exactly, through our
    reader and through the safetensors package's; the file gets the umask's mode like open()."""
    from safetensors.numpy import load_file
    rng = np.random.default_rng(0)
    tensors = {"big": rng.standard_normal((37, 29)).astype(np.float32),
               "view": rng.standard_normal((20, 30)).T[::2],
               "ids": np.arange(301, dtype=np.int64), "one": np.ones(3, np.float32)}
    path = save_safetensors(tensors, tmp_path / "t.safetensors", metadata={"k": "v"})
    for loaded in (load_safetensors(path), load_file(str(path))):
        assert set(loaded) == set(tensors)
        for name, arr in tensors.items():
            assert loaded[name].dtype == arr.dtype and np.array_equal(loaded[name], arr)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]


def test_save_safetensors_failing_midway_keeps_the_old_file(tmp_path, monkeypatch):
    from tinygpt.weights import safetensors_io
    path = save_safetensors({"a": np.zeros(5, np.float32)}, tmp_path / "m.safetensors")
    good, real, calls = path.read_bytes(), safetensors_io._tensor_bytes, []

    def dies_on_the_second_tensor(arr, dtype):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(arr, dtype)

    monkeypatch.setattr(safetensors_io, "_tensor_bytes", dies_on_the_second_tensor)
    with pytest.raises(KeyboardInterrupt):
        save_safetensors({"a": np.ones(5, np.float32), "b": np.ones(3, np.float32)}, path)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def _write_lying(path, header_edit, trailing=b""):
    """A valid 2-tensor file, then its header edited to lie."""
    save_safetensors({"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                      "b": np.ones(4, dtype=np.float32)}, path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header_edit(header)
    new = json.dumps(header).encode()
    path.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + n:] + trailing)


LIES = {
    "past the end": (lambda h: h["b"].update(data_offsets=[24, 4000], shape=[994]), "past the end"),
    "size vs shape": (lambda h: h["a"].update(shape=[3, 3]), "needs 36"),
    "overlap": (lambda h: (h["a"].update(data_offsets=[0, 24]),
                           h["b"].update(data_offsets=[8, 24], shape=[4])), "needs 16|overlap"),
    "hole": (lambda h: h["a"].update(data_offsets=[0, 16], shape=[2, 2]), "hole at byte 16"),
    "bad dtype": (lambda h: h["a"].update(dtype="F128"), "dtype"),
    "negative": (lambda h: h["a"].update(data_offsets=[-8, 16]), "data_offsets"),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_lying_safetensors_header_is_refused(tmp_path, lie):
    edit, message = LIES[lie]
    path = tmp_path / "lie.safetensors"
    _write_lying(path, edit)
    with pytest.raises(SafetensorsError, match=message):
        load_safetensors(path)


def test_truncated_or_padded_safetensors_is_refused(tmp_path):
    path = tmp_path / "x.safetensors"
    _write_lying(path, lambda h: None, trailing=b"\0" * 8)
    with pytest.raises(SafetensorsError, match="trailing"):
        load_safetensors(path)
    save_safetensors({"a": np.ones(100, np.float32)}, path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(SafetensorsError, match="past the end"):
        load_safetensors(path)
    path.write_bytes((10 ** 12).to_bytes(8, "little") + b"{}")
    with pytest.raises(SafetensorsError, match="header length"):
        load_safetensors(path)


def test_config_disagreeing_with_shapes_names_the_tensor(hf_dir, tmp_path):
    path, _ = hf_dir
    hf_cfg = json.loads((path / "config.json").read_text())
    with pytest.raises(WeightsError, match=r"^config: n_positions is 16 but wpe\.weight has shape \(32, 64\), "
                                           r"which implies n_positions 32$"):
        load_gpt2(path / "model.safetensors", config={**hf_cfg, "n_positions": 16})
    # the layer count is checked against the block numbers in the names before anything else
    with pytest.raises(WeightsError, match=r"^config: n_layer is 3 but the weights hold blocks 0\.\.1 \(2 of them\)$"):
        load_gpt2(path / "model.safetensors", config={**hf_cfg, "n_layer": 3})
    with pytest.raises(WeightsError, match=r"config\.json: n_layer is 1 but the weights hold blocks 0\.\.1"):
        (tmp_path / "config.json").write_text(json.dumps({**hf_cfg, "n_layer": 1}))
        load_gpt2(path / "model.safetensors", config=tmp_path / "config.json")
    with pytest.raises(WeightsError, match="activation_function"):
        load_gpt2(path / "model.safetensors", config={**hf_cfg, "activation_function": "relu"})
    # missing and unexpected names are listed together, with the shape problems
    sd = strip_prefix(load_safetensors(path / "model.safetensors"))
    sd.pop("h.0.mlp.c_fc.bias")
    sd["h.0.attn.c_attn.weight"] = np.zeros((64, 190), np.float32)
    sd["extra.weight"] = np.zeros(3, np.float32)
    save_safetensors(sd, tmp_path / "broken.safetensors")
    with pytest.raises(WeightsError) as info:
        load_gpt2(tmp_path / "broken.safetensors", config=path / "config.json")
    for part in ("missing: h.0.mlp.c_fc.bias", "unexpected: extra.weight",
                 "h.0.attn.c_attn.weight has shape (64, 190)"):
        assert part in str(info.value)


def test_book_pth_with_wrong_config_names_the_tensor(tmp_path):
    twin = ref.GPTModel(BOOK_TINY)
    torch.save(twin.state_dict(), tmp_path / "m.pth")
    with pytest.raises(WeightsError, match="pos_emb.weight"):
        load_gpt2(tmp_path / "m.pth", config={**BOOK_TINY, "context_length": 16})


def test_unknown_source_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="neither a file"):
        load_gpt2("gpt2-gigantic")


def test_example_generates_with_local_weights(tmp_path):
    """examples/ch05_gpt2_generate.py end to end on a tiny random GPT-2 with the real vocab."""
    tinygpt.manual_seed(0)
    model = GPTModel({**BOOK_TINY, "vocab_size": 50257, "qkv_bias": True, "tie_weights": True})
    save_pretrained(model, tmp_path / "tiny")
    script = Path(__file__).resolve().parents[1] / "examples" / "ch05_gpt2_generate.py"
    run = subprocess.run([sys.executable, str(script), "--weights", str(tmp_path / "tiny")],
                         capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "TINYGPT_HOME": str(tmp_path / "home")})
    assert run.returncode == 0, run.stderr
    assert "Every effort moves you" in run.stdout
