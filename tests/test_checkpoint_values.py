"""No result from non-finite numbers, and no allocation for a checkpoint's claims (issue 36,
families 1 and 3): saves refuse NaN/inf weights and optimizer moments; loads refuse them, an
optimizer `step` that is not an int >= 0, state JSON nested past the parser's depth, and a config
that claims far more than the file holds, before building anything."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.errors import CheckpointError, TrainingError
from tinygpt.model import GPTModel
from tinygpt.optim import AdamW
from tinygpt.train import (calc_loss_batch, export_model, load_checkpoint, load_model,
                           read_checkpoint, save_checkpoint)
from tinygpt.weights.safetensors_io import load_safetensors, read_header, save_safetensors

CFG = {"vocab_size": 300, "context_length": 8, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
       "drop_rate": 0.0, "qkv_bias": False}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stepped():
    """A model and AdamW after one real step (so the optimizer holds its two moments)."""
    tg.manual_seed(1)
    model = GPTModel(CFG)
    opt = AdamW(model.parameters(), lr=1e-3)
    x = np.arange(16).reshape(2, 8) % CFG["vocab_size"]
    calc_loss_batch(x, (x + 1) % CFG["vocab_size"], model).backward()
    opt.step()
    return model, opt


def rewrite(src, dst, change_tensors=None, change_state=None):
    """Copy checkpoint `src` to `dst` byte-for-byte in format, editing tensors or state JSON:
    what a crafted or corrupted file holds, written without tinygpt's own checks."""
    _, metadata, _ = read_header(src)
    tensors = {k: np.array(v) for k, v in load_safetensors(src).items()}
    state = json.loads(metadata["state"])
    if change_tensors:
        change_tensors(tensors)
    if change_state:
        change_state(state)
    save_safetensors(tensors, dst, metadata={**metadata, "state": json.dumps(state)})
    return dst


@pytest.mark.parametrize("where", ["model", "optimizer"])
def test_no_save_writes_non_finite_weights_or_moments(tmp_path, where):
    model, opt = stepped()
    if where == "model":
        model.trf_blocks[1].ff.layers[0].weight.data[0, 0] = np.nan
        name = "model.trf_blocks.1.ff.layers.0.weight"
    else:
        index = [id(p) for p in model.parameters()].index(id(model.final_norm.scale))
        opt.state[id(model.final_norm.scale)]["exp_avg_sq"][3] = np.inf
        name = f"optim.{index}.exp_avg_sq"
    path = tmp_path / "ckpt.safetensors"
    with pytest.raises(TrainingError, match=rf"holds non-finite values \({name}\)"):
        save_checkpoint(path, model, opt, config=CFG)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_an_inf_adam_moment_in_a_file_is_refused_naming_file_and_key(tmp_path):
    model, opt = stepped()
    good = save_checkpoint(tmp_path / "good.safetensors", model, opt, config=CFG)
    bad = rewrite(good, tmp_path / "bad.safetensors",
                  change_tensors=lambda t: t["optim.4.exp_avg_sq"].reshape(-1).__setitem__(0, np.inf))
    fresh = GPTModel(CFG)
    fresh_opt = AdamW(fresh.parameters(), lr=1e-3)
    before = {k: v.copy() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: tensor optim\.4\.exp_avg_sq holds "
                                              r"NaN or inf"):
        load_checkpoint(bad, fresh, fresh_opt)
    assert all(np.array_equal(v, before[k]) for k, v in fresh.state_dict().items())
    assert fresh_opt.state == {}
    loaded, _ = load_model(bad)  # the weights alone are fine, and read without the moments
    assert np.array_equal(loaded.tok_emb.weight.data, model.tok_emb.weight.data)
    nan_weight = rewrite(good, tmp_path / "nan.safetensors",
                         change_tensors=lambda t: t["model.pos_emb.weight"].__setitem__(0, np.nan))
    for read in (load_model, lambda p: export_model(p, tmp_path / "out.safetensors")):
        with pytest.raises(CheckpointError, match=r"nan\.safetensors: tensor model\.pos_emb\.weight"):
            read(nan_weight)
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("step", ["3", -1, 2.5, True, None])
def test_an_optimizer_step_that_is_not_a_count_is_refused(tmp_path, step):
    model, opt = stepped()
    good = save_checkpoint(tmp_path / "good.safetensors", model, opt, config=CFG)

    def set_step(state):
        state["optimizer"]["scalars"]["2"]["step"] = step
    bad = rewrite(good, tmp_path / "bad.safetensors", change_state=set_step)
    fresh = GPTModel(CFG)
    with pytest.raises(CheckpointError, match=rf"bad\.safetensors: optimizer state 2 has "
                                              rf"step={step!r}".replace("'", ".")):
        load_checkpoint(bad, fresh, AdamW(fresh.parameters()))


def test_deeply_nested_state_json_is_a_one_line_checkpoint_error(tmp_path):
    model, _ = stepped()
    good = save_checkpoint(tmp_path / "good.safetensors", model, config=CFG)
    _, metadata, _ = read_header(good)
    deep = "[" * 200_000 + "]" * 200_000
    path = tmp_path / "deep.safetensors"
    save_safetensors(load_safetensors(good), path, metadata={**metadata, "state": deep})
    for read in (read_checkpoint, load_model):
        with pytest.raises(CheckpointError, match=r"deep\.safetensors: the recorded state is not "
                                                  r"valid JSON \(RecursionError"):
            read(path)


CLAIMS = [({"vocab_size": 3_000_000}, r"tok_emb\.weight is \(300, 16\), the config needs "
                                      r"\(3000000, 16\)"),
          ({"n_layers": 1_000_000}, "2 transformer blocks, the config says n_layers=1000000"),
          ({"context_length": 10 ** 9, "emb_dim": 4096, "n_heads": 2},
           r"pos_emb\.weight is \(8, 16\), the config needs \(1000000000, 4096\)")]


@pytest.mark.parametrize("claim,message", CLAIMS)
def test_a_huge_claimed_config_is_refused_before_anything_is_built(tmp_path, claim, message):
    """Every reader compares the claim with the header's shapes first: a one-line error, and a
    process that stays small (measured in a fresh interpreter: its peak resident size)."""
    model, opt = stepped()
    good = save_checkpoint(tmp_path / "good.safetensors", model, opt, config=CFG)
    path = rewrite(good, tmp_path / "claims.safetensors",
                   change_state=lambda s: s["config"].update(claim))
    assert path.stat().st_size < 300_000  # a few hundred KB
    code = textwrap.dedent(f"""
        import resource, sys
        from tinygpt.errors import CheckpointError
        from tinygpt.model import GPTModel
        from tinygpt.optim import AdamW
        from tinygpt.train import export_model, load_checkpoint, load_model, read_checkpoint
        path = {str(path)!r}
        small = GPTModel({CFG!r})
        readers = [load_model, read_checkpoint, lambda p: load_checkpoint(p, small),
                   lambda p: load_checkpoint(p, small, AdamW(small.parameters())),
                   lambda p: export_model(p, p + ".out")]
        for read in readers:
            try:
                read(path)
            except CheckpointError as err:
                print(str(err).replace(chr(10), " "))
            else:
                sys.exit("a reader accepted the claim")
        try:  # this process's peak; ru_maxrss also counts the forked parent's before exec
            peak = next(int(line.split()[1]) for line in open("/proc/self/status")
                        if line.startswith("VmHWM:"))
        except OSError:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("MAXRSS_KB", peak)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.path.join(REPO, "src")}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    import re
    assert len(lines) == 6 and all(re.search(message, line) for line in lines[:5]), lines
    assert all("claims.safetensors: the recorded config does not fit" in line for line in lines[:5])
    assert int(lines[5].split()[1]) < 500 * 1024, lines[5]  # KB: far below any claimed size
