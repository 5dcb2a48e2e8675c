"""The `tinygpt` command line, run as a user would: in a subprocess."""
import json
import subprocess
import sys

import pytest

from tinygpt.assets import asset_path

TINY = {"vocab_size": 50257, "context_length": 16, "emb_dim": 32, "n_heads": 2, "n_layers": 1,
        "drop_rate": 0.0, "qkv_bias": False}


def tinygpt(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tinygpt", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    text = tmp / "story.txt"
    text.write_text(asset_path("the-verdict.txt").read_text()[:4000])
    cfg = tmp / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    out = tinygpt("pretrain", "--text", str(text), "--config", str(cfg), "--epochs", "2",
                  "--batch-size", "4", "--eval-freq", "4", "--out", str(tmp / "run"), "--quiet")
    assert out.returncode == 0, out.stderr
    return tmp, out


def test_pretrain_writes_checkpoint_and_prints_losses(pretrained):
    tmp, out = pretrained
    assert (tmp / "run" / "model.safetensors").is_file()
    assert "checkpoint:" in out.stdout


def test_generate_from_the_checkpoint(pretrained):
    tmp, _ = pretrained
    out = tinygpt("generate", "--checkpoint", str(tmp / "run" / "model.safetensors"),
                  "--prompt", "Every effort moves you", "--max-new-tokens", "5")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Every effort moves you")


def test_resume_continues_a_run(pretrained):
    tmp, _ = pretrained
    out = tinygpt("pretrain", "--text", str(tmp / "story.txt"), "--config", str(tmp / "tiny.json"),
                  "--epochs", "3", "--batch-size", "4", "--out", str(tmp / "run2"), "--quiet",
                  "--resume", str(tmp / "run" / "model.safetensors"))
    assert out.returncode == 0, out.stderr


def test_resume_refuses_a_changed_setting_in_one_line(pretrained):
    tmp, _ = pretrained
    ckpt = tmp / "run" / "model.safetensors"
    out = tinygpt("pretrain", "--text", str(tmp / "story.txt"), "--resume", str(ckpt), "--out",
                  str(tmp / "run3"), "--lr", "0.001", "--seed", "7", "--quiet")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    for part in ("lr (--lr): checkpoint 0.0004, given 0.001", "seed (--seed): checkpoint 123, given 7",
                 "leave these out", "start a new run"):
        assert part in out.stderr
    assert not (tmp / "run3").exists() or not any((tmp / "run3").iterdir())


def test_resume_says_what_it_continues_with(pretrained):
    tmp, _ = pretrained
    out = tinygpt("pretrain", "--text", str(tmp / "story.txt"), "--resume",
                  str(tmp / "run" / "model.safetensors"), "--out", str(tmp / "run4"), "--epochs", "3")
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("resuming "))
    for part in ("with its settings: lr=0.0004", "weight_decay=0.1", "schedule=False", "seed=123",
                 "batch_size=4", "eval_freq=4"):
        assert part in line


@pytest.mark.parametrize("args, message", [
    (["pretrain", "--text", "no-such-file.txt"], "text file no-such-file.txt does not exist"),
    (["pretrain", "--text", "{story}", "--config", "nope.json"], "config file nope.json does not exist"),
    (["pretrain", "--text", "{story}", "--config", "gpt5"], "unknown config 'gpt5'"),
    (["generate", "--checkpoint", "missing.safetensors", "--prompt", "x"],
     "'missing.safetensors' is neither a file, a directory, nor a GPT-2 model name"),
    (["generate", "--checkpoint", "{story}", "--prompt", "x"],
     "expected a directory, .safetensors, .pth, .pt or .bin file"),
])
def test_user_mistakes_give_one_line_errors(pretrained, args, message):
    tmp, _ = pretrained
    args = [a.replace("{story}", str(tmp / "story.txt")) for a in args]
    out = tinygpt(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("sub", ["pretrain", "generate", "download"])
def test_help_for_each_subcommand(sub):
    out = tinygpt(sub, "--help")
    assert out.returncode == 0 and f"usage: tinygpt {sub}" in out.stdout


def test_the_resume_command_is_written_as_the_run_was_started(monkeypatch):
    import argparse
    from tinygpt.cli.pretrain import resume_command
    args = argparse.Namespace(text="my story.txt", out="runs/x", epochs=None, quiet=False,
                              start_context="Every effort moves you", checkpoint_every=None)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/tinygpt", "pretrain"])
    assert resume_command(args, "runs/x/model.safetensors") == \
        "tinygpt pretrain --text 'my story.txt' --resume runs/x/model.safetensors --out runs/x"
    monkeypatch.setattr(sys, "argv", ["/src/tinygpt/__main__.py", "pretrain"])
    args.epochs, args.quiet = 4, True
    assert resume_command(args, "c.safetensors") == ("python -m tinygpt pretrain --text 'my story.txt' "
                                                     "--resume c.safetensors --out runs/x --epochs 4 --quiet")
