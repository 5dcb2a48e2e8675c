"""Shared by tests/test_quant*.py: tiny Qwen3 / Llama / GPT-2 models saved as Hugging Face folders
with bf16 weights (written here byte by byte: tinygpt's writer has no bf16), and their float32
twins holding the same bf16-rounded values."""
import json
import shutil

import numpy as np

import tinygpt as tg
from modern_models import TINY_LLAMA, TINY_QWEN3
from tinygpt.kernels.quant_gemv import float32_to_bf16_ref
from tinygpt.model import Llama3Model, Qwen3Model
from tinygpt.weights import load_pretrained, save_pretrained_hf
from tinygpt.weights.safetensors_io import load_safetensors

# the q8 block is 32 values: input sizes here are multiples of 32
QWEN3 = {**TINY_QWEN3, "emb_dim": 32, "hidden_dim": 64, "vocab_size": 96, "tie_weights": True}
LLAMA = {**TINY_LLAMA, "hidden_dim": 64, "vocab_size": 96}
MODELS = {"qwen3": (Qwen3Model, QWEN3), "llama": (Llama3Model, LLAMA)}


def write_safetensors(path, tensors: dict, metadata=None):
    """{name: (tag, ndarray)} -> a safetensors file, the bytes of each array as they are."""
    header, offset = {}, 0
    for name, (tag, arr) in tensors.items():
        header[name] = {"dtype": tag, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for _, arr in tensors.values():
            f.write(np.ascontiguousarray(arr).tobytes())


def bf16_folder(tmp_path, kind, seed=0, **changes):
    """A Hugging Face folder of a random tiny `kind` model (cfg `changes` applied) whose weights
    are all BF16."""
    tg.manual_seed(seed)
    cls, cfg = MODELS[kind]
    model = cls({**cfg, **changes})
    for name, p in model.named_parameters():
        if p.data.ndim == 1:  # norm scales: not all ones
            p.data[:] = 1.0 + 0.1 * np.random.default_rng(seed).standard_normal(p.shape)
    folder = tmp_path / f"{kind}-f32"
    save_pretrained_hf(model, folder)
    out = tmp_path / f"{kind}-bf16"
    out.mkdir()
    shutil.copy(folder / "config.json", out / "config.json")
    arrays = load_safetensors(folder / "model.safetensors")
    write_safetensors(out / "model.safetensors",
                      {n: ("BF16", float32_to_bf16_ref(a)) for n, a in arrays.items()})
    return out


def float_twin(folder):
    """The float32 model of `folder` (bf16 widened: the bf16-rounded values exactly)."""
    return tg.model.for_inference(load_pretrained(folder)).eval()
