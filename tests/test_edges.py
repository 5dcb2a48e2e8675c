"""Every outside input is checked at the edge (issue 36, family 8): each bad input below is one
TinyGPTError naming the problem through the library, and through the command one stderr line,
exit status 2, no traceback and no partial output file."""
import os
import subprocess
import sys

import pytest

from cli_helpers import one_line_error, run_tinygpt

import tinygpt
from tinygpt import files
from tinygpt.errors import InputError, InputIndexError, MissingFileError, TinyGPTError

TINY = {"vocab_size": 50257, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
        "drop_rate": 0.0, "qkv_bias": False}
LONG = "a" * 200_000  # longer than the csv module's field limit of 131,072 characters


tinygpt_cli = run_tinygpt  # `tinygpt ARGS` as a user runs it (cli_helpers.py)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- reading files: folders, missing files, too large, endless --------------------------------
def test_read_text_refuses_folders_missing_large_and_endless_files(tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("a" * 101)
    assert files.read_text(big, limit=101) == "a" * 101
    with pytest.raises(InputError, match="big.txt is 101 bytes, more than the 100 tinygpt reads"):
        files.read_text(big, limit=100)
    with pytest.raises(InputError, match="/dev/zero is not a regular file and gave more than 100 bytes"):
        files.read_text("/dev/zero", limit=100)
    with pytest.raises(InputError, match="is a directory"):
        files.read_text(tmp_path, "--text file")
    with pytest.raises(MissingFileError, match="--text file .*nope.txt does not exist"):
        files.read_text(tmp_path / "nope.txt", "--text file")
    read_end, write_end = os.pipe()  # a pipe that ends within the limit is read like a file
    os.write(write_end, "caf\u00e9".encode())
    os.close(write_end)
    assert files.read_text(f"/dev/fd/{read_end}") == "caf\u00e9"
    os.close(read_end)


def test_pretrain_text_that_never_ends_or_is_a_folder(tmp_path):
    one_line_error(tinygpt_cli("pretrain", "--text", "/dev/zero", cwd=tmp_path),
                   "/dev/zero is not a regular file")
    one_line_error(tinygpt_cli("pretrain", "--text", tmp_path, cwd=tmp_path), "is a directory")
    assert not (tmp_path / "runs").exists()


# --- spam data: fields longer than the csv module takes, folders ----------------------------
def test_spam_fields_over_the_csv_limit(tmp_path):
    from tinygpt.data.spam import read_messages
    (tmp_path / "long.tsv").write_text(f"ham\tfine\nspam\t{LONG}\n")
    (tmp_path / "long.csv").write_text(f"Label,Text\n0,ok\n1,{LONG}\n")
    with pytest.raises(InputError, match=r"long.tsv: line 2: field larger than field limit \(131072\)"):
        read_messages(tmp_path / "long.tsv")
    with pytest.raises(InputError, match=r"long.csv: line 3: field larger than field limit"):
        read_messages(tmp_path / "long.csv")
    one_line_error(tinygpt_cli("finetune-classify", "--data", tmp_path / "long.tsv", "--out", "out",
                               cwd=tmp_path), "line 2", "field larger than field limit")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_folder_where_a_data_file_belongs(tmp_path):
    from tinygpt.data.instruct import load_instruction_data
    from tinygpt.data.spam import read_messages
    for read in (read_messages, load_instruction_data):
        with pytest.raises(InputError, match="is a directory"):
            read(tmp_path)
    with pytest.raises(MissingFileError, match="instruction data file .*none.json does not exist"):
        load_instruction_data(tmp_path / "none.json")
    one_line_error(tinygpt_cli("finetune-classify", "--data", tmp_path, "--out", "out", cwd=tmp_path),
                   "is a directory")


# --- tokenizers: text that is not Unicode, ids outside the vocabulary, broken files -------------
def _tokenizers(tmp_path_factory):
    from tokenizer_files import write_llama3_tokenizer_model, write_qwen3_tokenizer_json

    from tinygpt.tokenizer import (BPETokenizer, Llama3Tokenizer, Qwen3Tokenizer, SimpleTokenizerV1,
                                   SimpleTokenizerV2, build_vocab, get_gpt2_tokenizer)
    d = tmp_path_factory.mktemp("tok")
    vocab = build_vocab("Hello, world. Is this-- a test?", ["<|endoftext|>", "<|unk|>"])
    qwen = Qwen3Tokenizer(write_qwen3_tokenizer_json(d / "tokenizer.json"))
    return {"gpt2": (get_gpt2_tokenizer(), 50257), "bpe": (BPETokenizer.gpt2(), 50257),
            "simple-v1": (SimpleTokenizerV1(vocab), len(vocab)),
            "simple-v2": (SimpleTokenizerV2(vocab), len(vocab)),
            "qwen3": (qwen, qwen.n_vocab),
            "llama3": (Llama3Tokenizer(write_llama3_tokenizer_model(d / "tokenizer.model")), 128_256)}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    pytest.importorskip("tokenizers")
    return _tokenizers(tmp_path_factory)


@pytest.mark.parametrize("name", ["gpt2", "bpe", "simple-v1", "simple-v2", "qwen3", "llama3"])
def test_decode_of_an_id_outside_the_vocabulary(tokenizers, name):
    tok, n = tokenizers[name]
    assert tok.decode([n - 1]) is not None  # the last id is in the vocabulary
    for bad in (n, -1, 2 ** 70):
        with pytest.raises(InputIndexError, match=rf"token id {bad} is outside the vocabulary of {n} ids"):
            tok.decode([0, bad])
    with pytest.raises(TinyGPTError, match="whole numbers"):
        tok.decode([1.5])


@pytest.mark.parametrize("name", ["qwen3", "llama3", "gpt2"])
def test_text_that_is_not_unicode(tokenizers, name):
    tok, _ = tokenizers[name]
    text = b"caf\xff".decode("utf-8", errors="surrogateescape")  # a byte that was not UTF-8
    with pytest.raises(InputError, match="surrogate code point U\\+DCFF at index 3"):
        tok.encode(text)


def test_llama_tokenizer_model_without_the_byte_tokens(tmp_path):
    import base64

    from tinygpt.tokenizer import Llama3Tokenizer
    tokens = [b"he", b"ll", b"o!", b"hello"]
    (tmp_path / "tokenizer.model").write_bytes(
        b"".join(base64.b64encode(t) + b" %d\n" % i for i, t in enumerate(tokens)))
    with pytest.raises(InputError, match="lacks 256 of the 256 single-byte tokens"):
        Llama3Tokenizer(tmp_path / "tokenizer.model")


# --- outputs: names with glob characters, exporting a checkpoint onto itself -------------------
@pytest.mark.parametrize("name", ["out[1].safetensors", "a*b", "q?.json"])
def test_stale_temps_of_names_with_glob_characters(tmp_path, name):
    stale = tmp_path / f".{name}.{_dead_pid()}-0a1b.tmp"
    stale.write_text("left by a killed write")
    other = tmp_path / f".out1.safetensors.{_dead_pid()}-0a1b.tmp"  # another file's, `[1]` globs it
    other.write_text("not ours")
    with files.atomic_write(tmp_path / name, "w") as f:
        f.write("new")
    assert (tmp_path / name).read_text() == "new"
    assert not stale.exists(), "the killed write's temporary file of this very name stays"
    assert other.exists(), "a temporary file of another name was removed"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """runs/ch05 holding a checkpoint with optimizer state, as `tinygpt pretrain` leaves it."""
    from tinygpt.model.gpt import GPTModel
    from tinygpt.optim import AdamW
    from tinygpt.train.checkpoint import save_checkpoint
    tinygpt.manual_seed(0)
    model = GPTModel(TINY)
    opt = AdamW(model.parameters(), lr=1e-3)
    model(tinygpt.tensor([[1, 2, 3]])).sum().backward()
    opt.step()
    d = tmp_path_factory.mktemp("runs") / "ch05"
    save_checkpoint(d / "model.safetensors", model, opt, config=TINY)
    return d


def test_show_accepts_the_run_folder(run_dir, tmp_path):
    out = tinygpt_cli("show", run_dir, cwd=tmp_path)
    assert out.returncode == 0 and "checkpoint:" in out.stdout, out.stderr
    assert "optimizer state:" in out.stdout and "resumable" in out.stdout
    (tmp_path / "empty").mkdir()
    one_line_error(tinygpt_cli("show", tmp_path / "empty", cwd=tmp_path),
                   "folder without a model.safetensors")
    one_line_error(tinygpt_cli("show", tmp_path / "none.safetensors", cwd=tmp_path), "does not exist")
    from tinygpt.train import checkpoint_info
    with pytest.raises(InputError, match="is a folder, not a checkpoint file"):
        checkpoint_info(run_dir)


def test_export_refuses_to_overwrite_its_checkpoint(run_dir, tmp_path):
    from tinygpt.train import checkpoint_info
    ckpt = run_dir / "model.safetensors"
    before = ckpt.read_bytes()
    (tmp_path / "link.safetensors").symlink_to(ckpt)
    for out in (ckpt, run_dir / ".." / "ch05" / "model.safetensors", tmp_path / "link.safetensors"):
        one_line_error(tinygpt_cli("export", run_dir, out, cwd=tmp_path), "would overwrite")
    assert ckpt.read_bytes() == before and checkpoint_info(ckpt)["has_optimizer"]
    assert sorted(p.name for p in run_dir.iterdir()) == ["model.safetensors"], "no partial output"
    one_line_error(tinygpt_cli("export", ckpt, tmp_path, cwd=tmp_path), "is a folder")
    out = tinygpt_cli("export", run_dir, "model[1].safetensors", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not checkpoint_info(tmp_path / "model[1].safetensors")["has_optimizer"]
