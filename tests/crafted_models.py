"""Tiny model folders written tensor by tensor (no torch, no transformers), for the tests that
hand a loader a lying config.json: test_claims.py and test_config_values.py.

`write_modern(path, kind, **changes)` writes a Qwen3 or Llama folder (config.json + real F32
tensors with the shapes the honest config implies, one file or two shards and an index), then
applies `changes` to config.json only, so the tensors keep telling the truth. `write_gpt2` does the
same for a GPT-2 folder through `save_pretrained`. `load_in_child` runs one load in a fresh
process and reports its outcome, its time and its peak RSS."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tinygpt.model import GPTModel
from tinygpt.weights import save_pretrained, save_safetensors
from tinygpt.weights.hf import expected_shapes

ROOT = Path(__file__).resolve().parents[1]

# the honest configs: config.json as transformers writes it (transformers 4 layout)
QWEN3 = {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "vocab_size": 50,
         "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
         "max_position_embeddings": 40, "rms_norm_eps": 1e-6, "rope_theta": 10_000.0,
         "rope_scaling": None, "tie_word_embeddings": False, "hidden_act": "silu",
         "attention_bias": False, "use_sliding_window": False, "torch_dtype": "float32"}
LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 50,
         "hidden_size": 32, "intermediate_size": 24, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 40,
         "rms_norm_eps": 1e-5, "rope_theta": 500.0, "tie_word_embeddings": True,
         "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
         "hidden_act": "silu", "mlp_bias": False, "torch_dtype": "bfloat16"}
HONEST = {"qwen3": QWEN3, "llama": LLAMA}
# the cfg the honest configs mean (what expected_shapes needs to name the tensors)
CFGS = {"qwen3": {"vocab_size": 50, "emb_dim": 16, "n_heads": 4, "n_layers": 2, "hidden_dim": 24,
                  "head_dim": 8, "n_kv_groups": 2, "tie_weights": False},
        "llama": {"vocab_size": 50, "emb_dim": 32, "n_heads": 4, "n_layers": 2, "hidden_dim": 24,
                  "head_dim": 8, "n_kv_groups": 2, "tie_weights": True}}
NORMS = {"qwen3": "scale", "llama": "weight"}
GPT2_CFG = {"vocab_size": 40, "context_length": 8, "emb_dim": 8, "n_heads": 2, "n_layers": 2,
            "drop_rate": 0.0, "qkv_bias": True}


def write_modern(path, kind: str, shards: int = 1, **changes) -> Path:
    """A `kind` ("qwen3"/"llama") folder whose tensors fit HONEST[kind]; config.json gets `changes`
    (a value of `...` deletes the key). Returns the folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    want = expected_shapes(CFGS[kind], NORMS[kind])
    tensors = {hf: (0.1 * rng.standard_normal(shape)).astype(np.float32)
               for hf, (_, shape) in want.items()}
    if shards == 1:
        save_safetensors(tensors, path / "model.safetensors", metadata={"format": "pt"})
    else:
        names, weight_map = sorted(tensors), {}
        for k in range(shards):
            shard = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = names[k::shards]
            save_safetensors({n: tensors[n] for n in part}, path / shard, metadata={"format": "pt"})
            weight_map.update({n: shard for n in part})
        write_json(path / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})
    write_config(path, HONEST[kind], **changes)
    return path


def write_gpt2(path, **changes) -> Path:
    """A GPT-2 folder (save_pretrained of a tiny GPTModel) whose config.json gets `changes`."""
    save_pretrained(GPTModel(GPT2_CFG), path)
    config = json.loads((Path(path) / "config.json").read_text())
    write_config(path, config, **changes)
    return Path(path)


def write_config(path, config: dict, **changes) -> None:
    config = {**config, **changes}
    write_json(Path(path) / "config.json", {k: v for k, v in config.items() if v is not ...})


def write_json(file, value) -> None:
    Path(file).write_text(json.dumps(value), encoding="utf-8")  # NaN and Infinity as JSON reads them


def edit_index(path, edit) -> None:
    """Apply `edit(index dict)` to the folder's model.safetensors.index.json."""
    file = Path(path) / "model.safetensors.index.json"
    index = json.loads(file.read_text())
    edit(index)
    write_json(file, index)


# Peak RSS: the kernel's high-water mark of this process's own memory (VmHWM, reset by exec).
# ru_maxrss is not used where VmHWM exists: Linux carries it across exec, so a child of a large
# pytest process (torch imported) would report its parent's size.
CHILD = """
import resource, sys, time
from tinygpt.errors import TinyGPTError
from tinygpt.weights import load_gpt2, load_pretrained
start = time.perf_counter()
try:
    {call}(sys.argv[1])
    print("LOADED")
except TinyGPTError as e:
    print("REFUSED", type(e).__name__, e)
seconds = time.perf_counter() - start
try:
    with open("/proc/self/status") as f:
        peak_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
except OSError:
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("STATS", seconds, peak_kib / 1024)
"""


def child_env() -> dict:
    """This worktree's package first, whatever the environment installed."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}


def load_in_child(folder, call: str = "load_pretrained") -> tuple:
    """(first output line, seconds, peak RSS in MB of the whole child) of `call(folder)`."""
    run = subprocess.run([sys.executable, "-c", CHILD.format(call=call), str(folder)],
                         env=child_env(), capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    seconds, peak_mb = map(float, lines[-1].split()[1:])
    return lines[0], seconds, peak_mb


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinygpt", *map(str, args)], env=child_env(),
                          capture_output=True, text=True, timeout=300, check=False)
