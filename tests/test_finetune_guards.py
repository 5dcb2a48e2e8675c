"""Fine-tuning never produces a result from non-finite numbers, never trains on nothing, and
reports progress in plain lines off a terminal (issues 36.3, 36.4, 37.5).

Every loop (the classifier's, instruction fine-tuning's, DPO's) stops at the first non-finite
loss with a TrainingError naming the step; no classifier, model, LoRA or policy file is written
(a previous good one is left as it was); the commands say so in one line and exit 2."""
import json
import re

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import cli
from tinygpt.assets import asset_path
from tinygpt.data import DataLoader
from tinygpt.data.spam import read_sms_spam
from tinygpt.errors import CheckpointError, InputError, TrainingError
from tinygpt.finetune import classify
from tinygpt.finetune.classify import (classify_review, replace_head, save_classifier,
                                       train_classifier_simple, trainable_parameters)
from tinygpt.finetune.dpo import frozen_copy, load_preference_data, train_model_dpo_simple
from tinygpt.finetune.dpo_train import make_loaders, run_dpo
from tinygpt.finetune.instruct import generate_responses, run_instruction_finetune
from tinygpt.model import GPTModel
from tinygpt.optim import AdamW
from tinygpt.tokenizer import get_gpt2_tokenizer
from tinygpt.train import save_checkpoint
from tinygpt.train.progress import LINES_PER_RUN

TINY = {"vocab_size": 50257, "context_length": 128, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
        "drop_rate": 0.0, "qkv_bias": False}
STEP = re.compile(r"\bstep (\d+)\b")


def tiny_model(seed=5, nan=False):
    tg.manual_seed(seed)
    model = GPTModel(TINY)
    if nan:
        model.trf_blocks[0].att.W_query.weight.data[0, 0] = np.nan
    return model


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# --- the classifier ---------------------------------------------------------------------------
class Messages:
    """`n` (token ids, label) pairs of 12 random tokens, labels alternating."""

    def __init__(self, n, seed=0):
        rng = np.random.default_rng(seed)
        self.rows = [(rng.integers(0, 1000, 12), i % 2) for i in range(n)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def classifier_run(lr=5e-4, weight_decay=0.1, nan=False, n=32, epochs=3, **options):
    model = replace_head(tiny_model(nan=nan), 2, trainable="all", seed=1)
    optimizer = AdamW(trainable_parameters(model), lr=lr, weight_decay=weight_decay)
    loader = DataLoader(Messages(n), 4, shuffle=True, drop_last=True, seed=1)
    return model, train_classifier_simple(model, loader, loader, optimizer, epochs, 100, 1, **options)


@pytest.mark.parametrize("setting", [dict(lr=1e6), dict(weight_decay=1e12), dict(nan=True)])
def test_classifier_loop_stops_at_the_first_non_finite_loss(setting):
    # (the step's own loss, or the evaluation after it: every 100 steps, so only after step 0)
    with pytest.raises(TrainingError, match=r"classifier fine-tuning (\(evaluated\) )?diverged: "
                                            r"the loss at step \d+ is (nan|inf)") as caught:
        classifier_run(quiet=True, **setting)
    step = int(STEP.search(str(caught.value)).group(1))
    if setting.get("nan"):
        assert step == 0 and "evaluated" not in str(caught.value), str(caught.value)
    assert step < 24, str(caught.value)


def test_a_nan_classifier_is_never_saved_and_the_previous_file_stays(tmp_path):
    path = tmp_path / "clf.safetensors"
    good = save_classifier(path, replace_head(tiny_model(), 2, seed=1)).read_bytes()
    bad = replace_head(tiny_model(nan=True), 2, seed=1)
    with pytest.raises(TrainingError, match="trf_blocks.0.att.W_query.weight"):
        save_classifier(path, bad)
    assert path.read_bytes() == good


def test_classify_refuses_non_finite_logits():
    model = replace_head(tiny_model(), 2, seed=1)
    model.out_head.bias.data[:] = np.inf  # inf - inf: NaN logits, whose argmax would be "not spam"
    model.out_head.weight.data[:] = 0.0
    with pytest.raises(InputError, match="logits for this message are not finite"):
        classify_review("Free entry! Txt WIN now", model, get_gpt2_tokenizer(), max_length=12)


def test_classify_command_refuses_overflowing_logits_in_one_line(tmp_path, capsys):
    model = replace_head(tiny_model(), 2, seed=1)
    model.out_head.weight.data[:] = 3e38  # finite, saved; its products overflow to inf
    path = save_classifier(tmp_path / "clf.safetensors", model, max_length=12)
    assert cli.main(["classify", "--model", str(path), "--text", "Free entry! Txt WIN now"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("tinygpt classify: error: the classifier's logits for this message "
                           "are not finite"), line


def small_collection(tmp_path, n_ham=60, n_spam=40):
    rows = [r for r in read_sms_spam() if '"' not in r[1] and "\n" not in r[1]]
    small = [r for r in rows if r[0] == "ham"][:n_ham] + [r for r in rows if r[0] == "spam"][:n_spam]
    path = tmp_path / "small.tsv"
    path.write_text("".join(f"{label}\t{text}\n" for label, text in small), encoding="utf-8")
    return path


@pytest.mark.parametrize("args", [["--lr", "1e6"], ["--weight-decay", "1e12"], ["--weights", "NAN"]])
def test_finetune_classify_diverging_exits_2_and_keeps_the_previous_classifier(tmp_path, monkeypatch,
                                                                                capsys, args):
    monkeypatch.setattr(classify, "OFFLINE_CONFIG", TINY)
    if args[-1] == "NAN":  # GPT-2 weights (Hugging Face layout) holding a NaN
        from tinygpt.weights import save_pretrained
        save_pretrained(tiny_model(nan=True), tmp_path / "nan-gpt2")
        args = ["--weights", str(tmp_path / "nan-gpt2")]
    out = tmp_path / "run"
    good = save_classifier(out / "classifier.safetensors", replace_head(tiny_model(), 2)).read_bytes()
    assert cli.main(["finetune-classify", "--data", str(small_collection(tmp_path)), "--epochs", "3",
                     "--out", str(out), "--quiet", *args]) == 2
    line = one_error_line(capsys)
    assert line.startswith("tinygpt finetune-classify: error: "), line
    assert re.search(r"classifier fine-tuning (\(evaluated\) )?diverged: the loss at step \d+ ", line) \
        or "non-finite" in line, line
    assert (out / "classifier.safetensors").read_bytes() == good


def test_finetune_classify_refuses_fewer_messages_than_a_batch(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(classify, "OFFLINE_CONFIG", TINY)
    out = tmp_path / "run"
    data = small_collection(tmp_path, n_ham=5, n_spam=5)  # balanced 10: 7 train, 1 validation, 2 test
    assert cli.main(["finetune-classify", "--data", str(data), "--out", str(out), "--quiet"]) == 2
    assert "7 training messages make no full batch of 8: nothing would train" in one_error_line(capsys)
    assert not (out / "classifier.safetensors").exists()


def test_classifier_progress_is_plain_periodic_lines_off_a_terminal(capsys):
    classifier_run(n=40, epochs=4)  # 10 batches x 4 epochs; capsys's streams are no terminal
    captured = capsys.readouterr()
    assert "\r" not in captured.err + captured.out
    steps = [int(m) for m in re.findall(r"^finetune: step (\d+)/40,", captured.err, re.M)]
    every = 40 // LINES_PER_RUN
    assert steps == list(range(every, 41, every)), captured.err
    assert captured.out.count("Training accuracy:") == 4


def save_start(path, model, **state):
    """save_checkpoint, able to write a model holding NaN as a crafted bad input: the saver itself
    refuses non-finite weights (tests/test_checkpoint_values.py), so the check is lifted here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("tinygpt.train.checkpoint.check_finite_state", lambda *a, **k: None)
        return save_checkpoint(path, model, **state)


# NaN starting weights are refused where the file is read (one line naming the tensor), or the
# run stops at its first step
NAN_START = r"(step \d+: the (evaluated )?training loss is nan|holds NaN or inf values)"


# --- instruction fine-tuning -------------------------------------------------------------------
@pytest.fixture(scope="module")
def instruction_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("instruct") / "data.json"
    path.write_text(json.dumps(json.loads(asset_path("instruction-data.json").read_text())[:40]))
    return path


@pytest.mark.parametrize("nan", [False, True])
def test_instruct_diverging_writes_no_model_and_keeps_the_previous(tmp_path, instruction_data, nan):
    start = tmp_path / "start.safetensors"
    save_start(start, tiny_model(nan=nan), config=TINY)
    out = tmp_path / "run"
    good = save_checkpoint(out / "model.safetensors", tiny_model(), config=TINY).read_bytes()
    with pytest.raises((TrainingError, CheckpointError), match=NAN_START if nan else
                       r"step 0: the (evaluated )?training loss is nan"):
        run_instruction_finetune(weights=str(start), data_path=instruction_data, out_dir=out,
                                 num_epochs=2, batch_size=4, lr=5e-4 if nan else 1e6, lora_rank=2,
                                 eval_freq=100, eval_iter=1, max_new_tokens=3, quiet=True)
    assert (out / "model.safetensors").read_bytes() == good
    assert not (out / "lora.safetensors").exists()


@pytest.mark.parametrize("nan, lr", [(True, "2e-3"), (False, "1e6")])
def test_finetune_instruct_diverging_exits_2_in_one_line(tmp_path, instruction_data, capsys, nan, lr):
    start = tmp_path / "start.safetensors"
    save_start(start, tiny_model(nan=nan), config=TINY)
    assert cli.main(["finetune-instruct", "--weights", str(start), "--data", str(instruction_data),
                     "--batch-size", "4", "--lr", lr, "--out", str(tmp_path / "run"), "--quiet"]) == 2
    line = one_error_line(capsys)
    assert re.search(NAN_START if nan else r"step \d+: the (evaluated )?training loss is nan; "
                     r"training diverged", line), line
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_instruct_responses_draw_no_bar_off_a_terminal(capsys):
    entries = json.loads(asset_path("instruction-data.json").read_text())[:2]
    responses = generate_responses(tiny_model(), entries, get_gpt2_tokenizer(), max_new_tokens=2)
    captured = capsys.readouterr()
    assert len(responses) == 2 and "\r" not in captured.err + captured.out, captured.err


def test_instruct_refuses_fewer_entries_than_a_batch(tmp_path, instruction_data):
    with pytest.raises(InputError, match="34 training entries make no full batch of 64"):
        run_instruction_finetune(data_path=instruction_data, out_dir=tmp_path, model_config=TINY,
                                 batch_size=64, quiet=True)
    assert not (tmp_path / "model.safetensors").exists()


# --- DPO -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def preference_entries():
    return load_preference_data(asset_path("instruction-data-with-preference.json"))[:24]


def dpo_loop(entries, lr=3e-4, nan=False, epochs=1, **options):
    policy = tiny_model(nan=nan)
    reference = frozen_copy(policy)
    train_loader, val_loader = make_loaders(entries[:16], entries[16:], get_gpt2_tokenizer(), 4,
                                            TINY["context_length"], 123, print)
    optimizer = AdamW(policy.parameters(), lr=lr, weight_decay=0.01)
    return train_model_dpo_simple(policy, reference, train_loader, val_loader, optimizer, epochs,
                                  0.1, 100, 1, **options)


@pytest.mark.parametrize("setting", [dict(lr=1e6), dict(nan=True)])
def test_dpo_loop_stops_at_the_first_non_finite_loss(preference_entries, setting):
    with pytest.raises(TrainingError, match=r"DPO training (\(evaluated\) )?diverged: the loss at "
                                            r"step \d+ is (nan|inf)") as caught:
        dpo_loop(preference_entries, progress="none", **setting)
    step = int(STEP.search(str(caught.value)).group(1))
    if setting.get("nan"):
        assert step == 0 and "evaluated" not in str(caught.value), str(caught.value)
    assert step < 4, str(caught.value)


@pytest.fixture(scope="module")
def chapter7_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ch07")
    for name, nan in (("good", False), ("nan", True)):
        save_start(folder / name / "model.safetensors", tiny_model(nan=nan),
                   config={**TINY, "tie_weights": False})
    return folder


@pytest.mark.parametrize("model, lr", [("good", "1e6"), ("nan", "3e-4")])
def test_finetune_dpo_diverging_exits_2_and_writes_no_policy(chapter7_models, tmp_path, capsys,
                                                             model, lr):
    out = tmp_path / "dpo"
    assert cli.main(["finetune-dpo", "--model", str(chapter7_models / model), "--out", str(out),
                     "--train-entries", "16", "--batch-size", "4", "--lr", lr, "--lora-rank", "2",
                     "--quiet"]) == 2
    line = one_error_line(capsys)
    assert re.search(NAN_START if model == "nan" else
                     r"DPO training (\(evaluated\) )?diverged: the loss at step \d+ ", line), line
    assert not (out / "model.safetensors").exists() and not (out / "lora.safetensors").exists()


def test_dpo_refuses_fewer_entries_than_a_batch(chapter7_models, tmp_path):
    with pytest.raises(InputError, match="3 training entries make no full batch of 8"):
        run_dpo(chapter7_models / "good", out_dir=tmp_path, num_train=3, quiet=True)


def test_dpo_progress_is_plain_periodic_lines_off_a_terminal(preference_entries, capsys):
    dpo_loop(preference_entries, epochs=5)  # 4 batches x 5 epochs
    captured = capsys.readouterr()
    assert "\r" not in captured.err + captured.out
    steps = [int(m) for m in re.findall(r"^dpo: step (\d+)/20,", captured.err, re.M)]
    assert steps == list(range(1, 21)), captured.err  # 20 steps, one line each (LINES_PER_RUN)
    assert captured.out.count("Train reward margins") == 1  # the step-0 evaluation
