"""`pretrain` and `train_model` arguments and resuming (issues 27.2, 27.3, 27.4, 27.10, 26.8, 13):
refusals happen before any work, with the argument or config key named."""
import math

import numpy as np
import pytest

from tinygpt.assets import asset_path
from tinygpt.errors import InputError, TrainingError
from tinygpt.tokenizer import get_gpt2_tokenizer
from tinygpt.train import checkpoint_info, read_checkpoint
from tinygpt.train import trainer as loop_module
from tinygpt.train import pretrain as pretrain_module
from tinygpt.train.pretrain import pretrain

CFG = {"vocab_size": 50257, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
       "drop_rate": 0.1, "qkv_bias": False}
TEXT = asset_path("the-verdict.txt").read_text(encoding="utf-8")[:1200]
RUN = dict(batch_size=2, eval_freq=3, eval_iter=1, plot=False, quiet=True, start_context="")


def no_work(monkeypatch):
    """Make any model building or training step fail the test."""
    monkeypatch.setattr(pretrain_module, "GPTModel", lambda cfg: pytest.fail("a model was built"))
    monkeypatch.setattr(loop_module, "calc_loss_batch", lambda *a: pytest.fail("a step ran"))


@pytest.mark.parametrize("argument,value", [
    ("num_epochs", 0), ("num_epochs", -3), ("batch_size", 0), ("eval_freq", 0),
    ("eval_iter", -1), ("checkpoint_every", 0), ("max_steps", 0), ("num_epochs", 1.5)])
def test_non_positive_counts_are_refused_before_any_work(tmp_path, monkeypatch, argument, value):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"a trained model")
    no_work(monkeypatch)
    with pytest.raises(InputError, match=f"{argument} must be a positive integer, got {value}"):
        pretrain(TEXT, CFG, out_dir=out, **{**RUN, argument: value})
    assert (out / "model.safetensors").read_bytes() == b"a trained model"


def test_a_non_positive_context_length_is_refused(tmp_path, monkeypatch):
    no_work(monkeypatch)
    with pytest.raises(InputError, match="context_length=0 is not a positive int"):
        pretrain(TEXT, {**CFG, "context_length": 0}, out_dir=tmp_path, **RUN)


def test_an_unusable_out_dir_is_found_before_the_first_step(tmp_path, monkeypatch):
    taken = tmp_path / "results"
    taken.write_text("an existing file where the run directory should go")
    no_work(monkeypatch)
    with pytest.raises(InputError, match="results is a file, not a directory"):
        pretrain(TEXT, CFG, out_dir=taken / "run1", **RUN)
    with pytest.raises(InputError, match="results is a file, not a directory"):
        pretrain(TEXT, CFG, out_dir=taken, **RUN)


def test_a_text_shorter_than_the_context_reports_the_whole_texts_size(tmp_path):
    text = TEXT[:200]
    tokens = len(get_gpt2_tokenizer().encode(text))
    with pytest.raises(InputError, match=rf"the text \(200 characters, {tokens} tokens\) is too short"):
        pretrain(text, {**CFG, "context_length": 64}, out_dir=tmp_path, **RUN)


def test_a_diverging_run_stops_at_the_first_non_finite_loss(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"step 0: the evaluated training loss is nan; .*no "
                                            r"checkpoint was written.*lower learning rate"):
        pretrain(TEXT, CFG, num_epochs=3, lr=1e4, out_dir=out, checkpoint_every=1, **RUN)
    assert not (out / "model.safetensors").exists()  # no checkpoint full of NaN


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    # the learning rate jumps from 1e-3 to 1e4 at step 3: steps 0-2 are checkpointed, then the
    # loss goes non-finite and the step-2 checkpoint must stay as it is
    monkeypatch.setattr(loop_module, "warmup_cosine_lr", lambda step, *a: 1e-3 if step < 3 else 1e4)
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as err:
        pretrain(TEXT, CFG, num_epochs=3, out_dir=out, checkpoint_every=1, schedule=True,
                 **{**RUN, "eval_freq": 1})
    message = str(err.value)
    assert message.startswith("step 3: ") and "is nan" in message or "is inf" in message
    assert f"the last checkpoint, {out / 'model.safetensors'} (step 2), is kept" in message
    assert "lower learning rate (this step used 1e+04)" in message
    model_sd, _, state = read_checkpoint(out / "model.safetensors")
    assert state["loop"]["global_step"] == 2 and state["loop"]["lrs"] == [1e-3] * 3
    assert all(np.isfinite(v).all() for v in model_sd.values())
    assert all(math.isfinite(v) for v in state["loop"]["train_losses"])


def first_run(tmp_path, **kw):
    out = tmp_path / "first"
    pretrain(TEXT, CFG, out_dir=out, **{**RUN, "num_epochs": 1, **kw})
    return out / "model.safetensors"


def test_resume_with_another_config_names_each_differing_key(tmp_path, monkeypatch):
    ckpt = first_run(tmp_path, max_steps=2)
    no_work(monkeypatch)
    changed = {**CFG, "n_heads": 4, "drop_rate": 0.0, "context_length": 32}
    with pytest.raises(InputError) as err:
        pretrain(TEXT, changed, num_epochs=2, resume=ckpt, out_dir=tmp_path / "second", **RUN)
    message = str(err.value)
    for part in ("n_heads: checkpoint 2, given 4", "drop_rate: checkpoint 0.1, given 0.0",
                 "context_length: checkpoint 16, given 32"):
        assert part in message
    assert "qkv_bias" not in message and "parameter groups" not in message


def test_resume_without_a_config_takes_the_checkpoints(tmp_path):
    ckpt = first_run(tmp_path, max_steps=2)
    model, result = pretrain(TEXT, None, num_epochs=1, resume=ckpt, out_dir=tmp_path / "second",
                             **RUN)
    assert {k: model.cfg[k] for k in CFG} == CFG and not result["nothing_to_do"]
    assert checkpoint_info(result["checkpoint"])["epochs"] == 1


def test_resume_with_nothing_left_says_so_and_leaves_the_checkpoint(tmp_path, capsys):
    ckpt = first_run(tmp_path)
    before, mtime = ckpt.read_bytes(), ckpt.stat().st_mtime_ns
    capsys.readouterr()
    _, result = pretrain(TEXT, None, num_epochs=1, resume=ckpt, out_dir=ckpt.parent, **RUN)
    assert f"nothing to do: {ckpt} already has 1 of 1 epochs" in capsys.readouterr().out
    assert result["nothing_to_do"] and result["checkpoint"] == ckpt
    assert ckpt.read_bytes() == before and ckpt.stat().st_mtime_ns == mtime
    assert not (ckpt.parent / "loss-plot.png").exists()


def test_resume_refuses_a_loader_of_another_length(tmp_path):
    ckpt = first_run(tmp_path, max_steps=2)
    with pytest.raises(InputError, match="batches per epoch"):
        pretrain(TEXT * 2, None, num_epochs=1, resume=ckpt, out_dir=tmp_path / "b", **RUN)


def test_resume_from_a_checkpoint_whose_config_lies_builds_nothing(tmp_path, monkeypatch):
    from tinygpt.errors import CheckpointError
    from tinygpt.train import load_checkpoint, save_checkpoint
    ckpt = first_run(tmp_path, max_steps=2)
    model = pretrain_module.GPTModel(CFG)
    state = load_checkpoint(ckpt, model)
    lying = {**CFG, "vocab_size": 600_000, "emb_dim": 1024}
    save_checkpoint(ckpt, model, None, **{**state, "config": lying})
    no_work(monkeypatch)
    with pytest.raises(CheckpointError, match=r"tok_emb.weight is \(50257, 16\), the config needs "
                                              r"\(600000, 1024\)"):
        pretrain(TEXT, None, num_epochs=2, resume=ckpt, out_dir=tmp_path / "b", **RUN)


@pytest.mark.parametrize("change,message", [
    ({"lr": 1e-3}, r"lr \(--lr\): checkpoint 0.0004, given 0.001"),
    ({"weight_decay": 0.0}, r"weight_decay \(--weight-decay\): checkpoint 0.1, given 0.0"),
    ({"seed": 7}, r"seed \(--seed\): checkpoint 123, given 7"),
    ({"schedule": True}, r"schedule \(--schedule\): checkpoint False, given True"),
    ({"eval_freq": 4}, r"eval_freq \(--eval-freq\): checkpoint 3, given 4"),
    ({"train_ratio": 0.8}, r"train_ratio: checkpoint 0.9, given 0.8")])
def test_resume_refuses_a_changed_setting_naming_it_and_both_values(tmp_path, monkeypatch, change,
                                                                    message):
    ckpt = first_run(tmp_path, max_steps=2)
    no_work(monkeypatch)
    with pytest.raises(InputError, match=message) as err:
        pretrain(TEXT, None, num_epochs=2, resume=ckpt, out_dir=tmp_path / "b", **{**RUN, **change})
    assert "continues with the checkpoint's settings" in str(err.value)
    assert "start a new run" in str(err.value)


def test_resume_continues_with_the_checkpoints_settings(tmp_path):
    """Settings left out are the checkpoint's, not the defaults: the resumed run trains with
    lr 1e-3, weight decay 0, seed 5 and the schedule of the first run, up to its 2 epochs."""
    ckpt = first_run(tmp_path, max_steps=2, lr=1e-3, weight_decay=0.0, seed=5, schedule=True,
                     num_epochs=2)
    saved = read_checkpoint(ckpt)[2]["settings"]
    assert {k: saved[k] for k in ("lr", "weight_decay", "seed", "schedule", "num_epochs",
                                  "batch_size", "eval_freq")} == \
        {"lr": 1e-3, "weight_decay": 0.0, "seed": 5, "schedule": True, "num_epochs": 2,
         "batch_size": 2, "eval_freq": 3}
    assert saved["warmup_steps"] >= 1 and saved["min_lr"] == 1e-6
    out = tmp_path / "second"
    _, result = pretrain(TEXT, None, resume=ckpt, out_dir=out, **RUN)
    state = read_checkpoint(out / "model.safetensors")[2]
    assert state["settings"] == saved and state["loop"]["epoch"] == 2
    assert max(result["lrs"]) <= 1e-3 and result["lrs"][0] < 1e-3  # warm-up to the run's peak
    with pytest.raises(InputError, match=r"num_epochs \(--epochs\): checkpoint 2, given 3"):
        pretrain(TEXT, None, num_epochs=3, resume=ckpt, out_dir=out, **RUN)  # the cosine spans 2


def test_without_a_schedule_a_resumed_run_may_train_more_epochs(tmp_path):
    ckpt = first_run(tmp_path)
    _, result = pretrain(TEXT, None, num_epochs=2, resume=ckpt, out_dir=tmp_path / "b", **RUN)
    assert result["epoch"] == 2 and not result["nothing_to_do"]
