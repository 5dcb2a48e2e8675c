"""Every mistake the `tinygpt` command can meet is one line on stderr and exit status 2, never a
traceback: bad configs, crafted weight files and checkpoints, sizes that cannot be allocated, a
resume whose config differs (naming the keys). Run as a user would, in a subprocess."""
import json
import pickle
import struct
import zipfile

import pytest

from cli_helpers import one_line_error, run_tinygpt

from tinygpt.assets import asset_path

TINY = {"vocab_size": 50257, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
        "drop_rate": 0.0, "qkv_bias": False}


tinygpt = run_tinygpt  # `tinygpt ARGS` as a user runs it (cli_helpers.py)


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def _safetensors(path, header: bytes):
    header += b" " * (-(8 + len(header)) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "story.txt").write_text(asset_path("the-verdict.txt").read_text()[:4000])
    (d / "list.json").write_text("[1, 2]")
    (d / "missing.json").write_text('{"vocab_size": 50257}')
    (d / "notjson.json").write_text("{vocab_size: 1")
    (d / "small-vocab.json").write_text(json.dumps({**TINY, "vocab_size": 1000}))
    (d / "huge.json").write_text(json.dumps({**TINY, "emb_dim": 4_000_000}))
    with zipfile.ZipFile(d / "evil.pth", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(_Evil()))
    (d / "corrupt.pth").write_bytes(b"PK\x03\x04" + bytes(200))
    _safetensors(d / "nested.safetensors", b"[" * 100_000 + b"]" * 100_000)
    state = {"format": "tinygpt-checkpoint", "version": "1", "state": "[1, 2]"}
    _safetensors(d / "state.safetensors", json.dumps({"__metadata__": state}).encode())
    return d


@pytest.mark.parametrize("args, words", [
    (["pretrain", "--text", "story.txt", "--config", "list.json"], ["list"]),
    (["pretrain", "--text", "story.txt", "--config", "missing.json"], ["emb_dim is missing"]),
    (["pretrain", "--text", "story.txt", "--config", "notjson.json"], ["notjson.json", "JSON"]),
    (["pretrain", "--text", "story.txt", "--config", "small-vocab.json"], ["vocab_size 1000"]),
    (["pretrain", "--text", "story.txt", "--config", "huge.json", "--epochs", "1"], ["allocate"]),
    (["generate", "--model", "evil.pth", "--prompt", "x"], ["posix.system", "Nothing was executed"]),
    (["generate", "--model", "corrupt.pth", "--prompt", "x"], ["corrupt.pth"]),
    (["generate", "--model", "nested.safetensors", "--prompt", "x"], ["nested.safetensors"]),
    (["generate", "--model", "state.safetensors", "--prompt", "x"], ["state.safetensors"]),
    (["show", "state.safetensors"], ["state.safetensors"]),
    (["pretrain", "--text", "."], ["is a directory"]),
])
def test_mistakes_are_one_line_with_exit_2(files, args, words):
    out = tinygpt(*args, cwd=files)
    one_line_error(out, *words)
    assert "pwned" not in out.stdout


def test_resume_names_the_config_keys_that_differ_and_epochs_zero_keeps_the_checkpoint(tmp_path):
    (tmp_path / "story.txt").write_text(asset_path("the-verdict.txt").read_text()[:4000])
    (tmp_path / "a.json").write_text(json.dumps(TINY))
    (tmp_path / "b.json").write_text(json.dumps({**TINY, "n_heads": 4, "drop_rate": 0.1}))
    common = ["pretrain", "--text", "story.txt", "--batch-size", "4", "--eval-freq", "4", "--quiet"]
    first = tinygpt(*common, "--config", "a.json", "--epochs", "1", "--out", "run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    ckpt = tmp_path / "run" / "model.safetensors"
    saved = ckpt.read_bytes()
    out = tinygpt(*common, "--config", "b.json", "--epochs", "2", "--resume", ckpt, "--out", "run2",
                  cwd=tmp_path)
    one_line_error(out, "n_heads", "drop_rate")
    out = tinygpt(*common, "--epochs", "0", "--out", "run", cwd=tmp_path)
    one_line_error(out, "--epochs")
    assert ckpt.read_bytes() == saved
    again = tinygpt(*common, "--epochs", "1", "--resume", ckpt, "--out", "run", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout + again.stderr and ckpt.read_bytes() == saved
