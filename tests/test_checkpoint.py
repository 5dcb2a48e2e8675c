"""Checkpoint files: stale temporaries, garbled or lying headers, model-only reading and export,
and `checkpoint_info` from the header alone (issues 27.5, 27.6, 26.4)."""
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.errors import CheckpointError
from tinygpt.model import GPTModel
from tinygpt.optim import AdamW
from tinygpt.train import (calc_loss_batch, checkpoint_info, export_model, load_checkpoint,
                           load_model, read_checkpoint, save_checkpoint)
from tinygpt.train import checkpoint as checkpoint_module
from tinygpt.weights.safetensors_io import save_safetensors

CFG = {"vocab_size": 300, "context_length": 8, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
       "drop_rate": 0.0, "qkv_bias": False}


def trained(tmp_path, name="ckpt.safetensors", model_cfg=CFG, **state):
    """A checkpoint of a model and AdamW after one real step."""
    tg.manual_seed(1)
    model = GPTModel(model_cfg)
    opt = AdamW(model.parameters(), lr=1e-3)
    x = np.arange(16).reshape(2, 8) % CFG["vocab_size"]
    calc_loss_batch(x, (x + 1) % CFG["vocab_size"], model).backward()
    opt.step()
    loop = {"epoch": 1, "global_step": 4, "tokens": 80, "train_losses": [5.0, 4.0],
            "val_losses": [5.5, 4.5], "tokens_seen": [16, 80], "lrs": [1e-3] * 5}
    state = {"loop": loop, "config": model_cfg, **state}
    return save_checkpoint(tmp_path / name, model, opt, **state), model, opt


def dead_pid():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    return int(proc.stdout)


def test_loading_removes_temporaries_left_by_killed_saves(tmp_path):
    path, _, _ = trained(tmp_path)
    stale = tmp_path / f".{path.name}.{dead_pid()}-0badc0de.tmp"
    live = tmp_path / f".{path.name}.{os.getpid()}-1234abcd.tmp"  # a save still running
    for tmp in (stale, live):
        tmp.write_bytes(b"half a checkpoint")
    read_checkpoint(path)
    assert not stale.exists() and live.exists()
    stale.write_bytes(b"again")
    checkpoint_info(path)
    assert not stale.exists()


def write_with_state(path, state_json, tensors=None):
    metadata = {"format": "tinygpt-checkpoint", "version": "1", "state": state_json}
    save_safetensors(tensors or {"model.x": np.zeros(2, np.float32)}, path, metadata=metadata)
    return path


@pytest.mark.parametrize("state_json,message", [
    ("not json {", "not valid JSON"),
    ("[1, 2]", "is a list, not a JSON object"),
    ('{"config": 5}', r"state\['config'\] is a int"),
    ('{"loop": "x"}', r"state\['loop'\] is a str"),
    ('{"tied": {"a": 3}}', "must map tensor names"),
    ('{"optimizer": {"param_groups": 1}}', "lacks param_groups"),
    ('{"tied": {"out_head.weight": "nothing"}}', "not in the file"),
])
def test_garbled_state_json_is_a_checkpoint_error(tmp_path, state_json, message):
    path = write_with_state(tmp_path / "bad.safetensors", state_json)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


@pytest.mark.parametrize("change,message", [
    ({"vocab_size": "many"}, "vocab_size='many' is not a positive int"),
    ({"n_layers": 0}, "n_layers=0 is not a positive int"),
    ({"drop_rate": 2}, "drop_rate=2 is not a number"),
    ({"emb_dim": 15}, "not divisible by n_heads"),
    ({"qkv_bias": "no"}, "qkv_bias='no' is not true/false"),
])
def test_bad_config_types_are_refused_before_building(tmp_path, monkeypatch, change, message):
    path, _, _ = trained(tmp_path, config={**CFG, **change})
    monkeypatch.setattr(checkpoint_module, "GPTModel", lambda cfg: pytest.fail("model was built"))
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_a_config_that_does_not_fit_the_tensors_is_refused_before_building(tmp_path, monkeypatch):
    # a crafted config asking for a 600k x 1024 embedding must fail on the header, not after
    # allocating gigabytes
    lying = {**CFG, "vocab_size": 600_000, "emb_dim": 1024, "n_heads": 16, "n_layers": 3,
             "qkv_bias": True}
    path, _, _ = trained(tmp_path, config=lying)
    monkeypatch.setattr(checkpoint_module, "GPTModel", lambda cfg: pytest.fail("model was built"))
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    text = str(err.value)
    for part in ("tok_emb.weight is (300, 16), the config needs (600000, 1024)",
                 "2 transformer blocks, the config says n_layers=3", "qkv_bias=True"):
        assert part in text


def test_load_model_builds_the_recorded_model_without_reading_the_optimizer(tmp_path):
    cfg = {**CFG, "vocab_size": 4000, "emb_dim": 64}  # big enough to dwarf the header and JSON
    path, model, _ = trained(tmp_path, model_cfg=cfg)
    optimizer_bytes = checkpoint_info(path)["optimizer_bytes"]
    tracemalloc.start()
    try:
        model_sd, optim_sd, _ = read_checkpoint(path, optimizer=False)
        for v in model_sd.values():
            float(np.asarray(v).sum())  # touch every model array
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert optim_sd is None and peak < 0.5 * optimizer_bytes, (peak, optimizer_bytes)
    loaded, state = load_model(path)
    assert not loaded.training and state["config"] == cfg
    for k, v in model.state_dict().items():
        assert np.array_equal(loaded.state_dict()[k], v), k


def test_export_model_drops_the_optimizer_and_still_loads(tmp_path):
    path, model, _ = trained(tmp_path)
    out = export_model(path, tmp_path / "export" / "model-only.safetensors")
    assert out.stat().st_size < 0.5 * path.stat().st_size  # AdamW keeps two arrays per weight
    info = checkpoint_info(out)
    assert not info["has_optimizer"] and info["optimizer_tensors"] == 0
    assert info["train_losses"] == [5.0, 4.0] and info["config"] == CFG
    loaded, _ = load_model(out)
    for k, v in model.state_dict().items():
        assert np.array_equal(loaded.state_dict()[k], v), k
    fresh = GPTModel(CFG)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(out, fresh, AdamW(fresh.parameters()))


def test_checkpoint_info_reads_the_header_only(tmp_path, monkeypatch):
    path, model, opt = trained(tmp_path)
    monkeypatch.setattr(checkpoint_module, "load_safetensors",
                        lambda *a: pytest.fail("tensor data was read"))
    info = checkpoint_info(path)
    params = list(model.parameters())
    model_arrays = {id(v): v for v in model.state_dict().values()}.values()
    assert info["model_tensors"] == len(model_arrays)
    assert info["model_bytes"] == sum(v.nbytes for v in model_arrays)
    assert info["optimizer_tensors"] == 2 * len(params)
    assert info["optimizer_bytes"] == 2 * sum(p.data.nbytes for p in params)
    assert info["file_bytes"] == path.stat().st_size and info["has_optimizer"]
    assert (info["epochs"], info["steps"], info["tokens"]) == (1, 5, 80)
    assert (info["final_train_loss"], info["final_val_loss"]) == (4.0, 4.5)
    assert info["val_losses"] == [5.5, 4.5] and info["lrs"] == [1e-3] * 5
    json.dumps(info)  # printable as JSON by `tinygpt show`


def test_a_foreign_or_truncated_file_names_itself(tmp_path):
    path, _, _ = trained(tmp_path)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cut.safetensors is not a readable tinygpt checkpoint"):
        checkpoint_info(cut)
    foreign = tmp_path / "foreign.safetensors"
    save_safetensors({"x": np.zeros(2, np.float32)}, foreign)
    with pytest.raises(CheckpointError, match="not a tinygpt checkpoint"):
        load_model(foreign)
