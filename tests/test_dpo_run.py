"""DPO training on small models: the frozen reference (bit-identical after training, no graph),
learning (the loss falls below ln 2 and the margin rises above 0), LoRA on the policy, refused
setups, `run_dpo`'s outputs and the `tinygpt finetune-dpo` command in a subprocess."""
import json
import math
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from tinygpt.assets import asset_path
from tinygpt.core.random import manual_seed
from tinygpt.data import DataLoader
from tinygpt.errors import InputError
from tinygpt.finetune.dpo import (PreferenceDataset, compute_dpo_loss_batch, dpo_collate_fn,
                                  frozen_copy, load_preference_data, train_model_dpo_simple)
from tinygpt.finetune.dpo_train import run_dpo
from tinygpt.finetune.lora import replace_linear_with_lora
from tinygpt.model import GPTModel
from tinygpt.optim import AdamW
from tinygpt.train import load_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = {"vocab_size": 50257, "context_length": 128, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
        "drop_rate": 0.0, "qkv_bias": False}


@pytest.fixture(scope="module")
def entries():
    return load_preference_data(asset_path("instruction-data-with-preference.json"))[:24]


def tiny_model(seed=5, **changes):
    manual_seed(seed)
    return GPTModel({**TINY, **changes})


def loaders(entries, batch_size=4):
    collate = partial(dpo_collate_fn, allowed_max_length=TINY["context_length"])
    train = DataLoader(PreferenceDataset(entries[:16]), batch_size, shuffle=True, drop_last=True,
                       collate_fn=collate, seed=1)
    val = DataLoader(PreferenceDataset(entries[16:]), batch_size, collate_fn=collate)
    return train, val


def snapshot(model):
    return {k: np.array(v, copy=True) for k, v in model.state_dict().items()}


def test_reference_is_bit_identical_after_training_and_records_no_graph(entries):
    policy = tiny_model()
    reference = frozen_copy(policy)
    before_ref, before_policy = snapshot(reference), snapshot(policy)
    train, val = loaders(entries)
    lines = []
    tracking = train_model_dpo_simple(policy, reference, train, val, AdamW(policy.parameters(), lr=1e-3),
                                      num_epochs=2, beta=0.1, eval_freq=3, eval_iter=1, write=lines.append)
    after_ref = snapshot(reference)
    assert all(np.array_equal(before_ref[k], after_ref[k]) for k in before_ref)
    assert all(p.grad is None and not p.requires_grad for p in reference.parameters())
    assert any(not np.array_equal(before_policy[k], v) for k, v in policy.state_dict().items())
    assert set(tracking) == {"train_losses", "train_chosen_rewards", "train_rejected_rewards",
                             "val_losses", "val_chosen_rewards", "val_rejected_rewards", "tokens_seen"}
    assert len(tracking["tokens_seen"]) == 3 and len(lines) == 3  # steps 0, 3, 6 of 8
    first_batch = next(iter(loaders(entries)[0]))  # a new loader of the same seed: same order
    assert tracking["tokens_seen"][0] == first_batch["chosen"].size
    assert lines[0].startswith("Ep 1 (Step 000000): Train loss ") and "Val reward margins " in lines[0]
    # the loss of the batch: the reference's log-probs carry no graph, the policy's do
    loss, chosen, rejected = compute_dpo_loss_batch(next(iter(train)), policy, reference, 0.1)
    assert loss.requires_grad and not chosen.requires_grad and not rejected.requires_grad


def test_dpo_learns_the_preference_on_a_fixed_batch(entries):
    """Policy == reference: loss ln 2, rewards 0. Steps on one batch push the chosen responses'
    log-probability up relative to the rejected ones: loss below ln 2, margin above 0."""
    policy = tiny_model()
    reference = frozen_copy(policy)
    batch = dpo_collate_fn([PreferenceDataset(entries[:4])[i] for i in range(4)])
    loss, chosen, rejected = compute_dpo_loss_batch(batch, policy, reference, 0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert chosen.item() == rejected.item() == 0.0
    optimizer = AdamW(policy.parameters(), lr=3e-3, weight_decay=0.01)
    for _ in range(8):
        optimizer.zero_grad()
        loss, _, _ = compute_dpo_loss_batch(batch, policy, reference, 0.1)
        loss.backward()
        optimizer.step()
    loss, chosen, rejected = compute_dpo_loss_batch(batch, policy, reference, 0.1)
    assert loss.item() < math.log(2) - 0.01 and chosen.item() - rejected.item() > 0.1


def test_lora_policy_trains_only_its_adapters(entries):
    policy = tiny_model()
    reference = frozen_copy(policy)
    replace_linear_with_lora(policy, rank=2, alpha=2)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    frozen_before = {k: v.copy() for k, v in policy.state_dict().items() if ".lora." not in k}
    b_before = {k: v.copy() for k, v in policy.state_dict().items() if k.endswith(".lora.B")}
    before_ref = snapshot(reference)
    train, val = loaders(entries)
    train_model_dpo_simple(policy, reference, train, val, AdamW(trainable, lr=1e-2), num_epochs=1,
                           beta=0.1, eval_freq=100, eval_iter=1, write=lambda *a: None)
    after = policy.state_dict()
    assert all(np.array_equal(v, after[k]) for k, v in frozen_before.items())
    assert all(not np.array_equal(v, after[k]) for k, v in b_before.items())
    assert all(np.array_equal(v, reference.state_dict()[k]) for k, v in before_ref.items())


@pytest.mark.parametrize("make_reference,message", [
    (lambda p: frozen_copy(tiny_model(emb_dim=32)), r"different configs \(policy vs reference: emb_dim 16 vs 32\)"),
    (lambda p: tiny_model(), "must be frozen"),
])
def test_mismatched_or_unfrozen_reference_is_refused_before_training(entries, make_reference, message):
    policy = tiny_model()
    before = snapshot(policy)
    train, val = loaders(entries)
    with pytest.raises(InputError, match=message):
        train_model_dpo_simple(policy, make_reference(policy), train, val,
                               AdamW(policy.parameters(), lr=1e-3), 1, 0.1, 1, 1)
    assert all(np.array_equal(v, policy.state_dict()[k]) for k, v in before.items())


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ch07") / "model.safetensors"
    save_checkpoint(path, tiny_model(), config={**TINY, "tie_weights": False})
    return path


def test_run_dpo_writes_plots_responses_and_a_loadable_policy(tiny_checkpoint, tmp_path):
    result = run_dpo(tiny_checkpoint.parent, out_dir=tmp_path, num_train=16, batch_size=4,
                     eval_freq=2, eval_iter=1, max_new_tokens=3, lora_rank=2, quiet=True)
    for key in ("loss_plot", "reward_margins_plot"):
        assert result[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    responses = json.loads(Path(result["responses"]).read_text(encoding="utf-8"))
    assert len(responses) == 3 and all("reference_response" in e and "policy_response" in e
                                       for e in responses)
    model, _ = load_model(result["checkpoint"])
    assert model.cfg["emb_dim"] == 16 and (tmp_path / "lora.safetensors").is_file()
    assert math.isfinite(result["val_loss"]) and len(result["tracking"]["val_losses"]) == 2


def test_run_dpo_says_when_a_split_is_empty(tiny_checkpoint, tmp_path, entries):
    data = tmp_path / "few.json"
    data.write_text(json.dumps(entries[:5]), encoding="utf-8")
    with pytest.raises(InputError, match="5 preference entries leave the test split empty"):
        run_dpo(tiny_checkpoint, data_path=data, out_dir=tmp_path, quiet=True)


def test_run_dpo_names_a_missing_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="run chapter 7 first"):
        run_dpo(tmp_path / "nothing-here", out_dir=tmp_path, quiet=True)


# ---- the command, in a subprocess ----------------------------------------------------------
CLI = "import sys; from tinygpt import cli; sys.exit(cli.main(sys.argv[1:]))"


def tinygpt_cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_finetune_dpo_command_end_to_end(tiny_checkpoint, tmp_path):
    out = tmp_path / "dpo"
    proc = tinygpt_cli("finetune-dpo", "--model", str(tiny_checkpoint.parent), "--out", str(out),
                       "--train-entries", "12", "--batch-size", "4", "--eval-freq", "2",
                       "--eval-iter", "1", "--max-new-tokens", "3", "--beta", "0.2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Ep 1 (Step 000000): Train loss" in proc.stdout
    assert "validation DPO loss" in proc.stdout and "Policy model response:" in proc.stdout
    assert (out / "dpo-loss-plot.png").is_file() and (out / "dpo-reward-margins-plot.png").is_file()
    load_model(out / "model.safetensors")


@pytest.mark.parametrize("args,message", [
    (["--beta", "0"], "--beta: must be a finite number above 0, got 0"),
    (["--beta", "nan"], "--beta: must be a finite number above 0, got nan"),
    (["--model", "missing-dir"], "no instruction-tuned model at missing-dir: run chapter 7 first"),
])
def test_finetune_dpo_command_refuses_bad_input_in_one_line(tmp_path, args, message):
    proc = tinygpt_cli("finetune-dpo", "--out", str(tmp_path / "o"), *args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
