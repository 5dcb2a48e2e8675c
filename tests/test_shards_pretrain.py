"""`pretrain --data`: training from token shards equals training from the same text, gradient
accumulation equals a larger batch, resume is exact, memory does not grow with the corpus."""
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from tinygpt.cli import main
from tinygpt.data import shards
from tinygpt.errors import InputError
from tinygpt.train import read_checkpoint
from tinygpt.train.pretrain import pretrain

CFG = {"vocab_size": 50257, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
       "drop_rate": 0.2, "qkv_bias": False}
RUN = dict(eval_freq=2, eval_iter=1, plot=False, quiet=True, start_context="", seed=5)
WORDS = ["every", "Effort", "moves", "you", "the", "Gisburn", "picture,", "said", "I", "12"]


def text_split_at_a_safe_cut(seed=1, lines=300):
    """An ASCII text whose 90% point (pretrain's character split) is a safe cut of
    prepare-data (before a line break and a letter), so both split it at the same place."""
    rng = random.Random(seed)
    line = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))) + "x\n"
    head = "".join(line() for _ in range(lines))[:-1]
    tail = "\nStart " + "".join(line() for _ in range(lines // 9))
    while int(0.9 * len(head + tail)) != len(head):
        if int(0.9 * len(head + tail)) > len(head):
            head += "y"
        else:
            tail = tail[:2] + "S" + tail[2:]
    return head + tail


def weights(path):
    model_sd, _, state = read_checkpoint(path, optimizer=False)
    return {k: np.array(v) for k, v in model_sd.items()}, state


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    text = text_split_at_a_safe_cut()
    (folder / "book.txt").write_text(text, encoding="ascii")
    shards.prepare_data([folder / "book.txt"], folder / "shards", jobs=1, shard_bytes=2000, piece_bytes=700,
                        progress=False)
    return text, folder / "shards"


def test_training_from_shards_equals_training_from_the_text(tmp_path, corpus):
    text, data = corpus
    assert len(shards.read_index(data)["train"]) > 3   # windows cross shard ends
    pretrain(text, CFG, batch_size=2, max_steps=5, out_dir=tmp_path / "text", **RUN)
    _, result = pretrain(None, CFG, batch_size=2, max_steps=5, out_dir=tmp_path / "data",
                         data_dir=data, **RUN)
    from_text, state_text = weights(tmp_path / "text" / "model.safetensors")
    from_data, state_data = weights(result["checkpoint"])
    for name in from_text:
        np.testing.assert_array_equal(from_data[name], from_text[name], err_msg=name)
    assert state_data["loop"]["val_losses"] == state_text["loop"]["val_losses"]
    assert state_data["loop"]["global_step"] == 4


def test_grad_accum_equals_a_larger_batch(tmp_path, corpus):
    _, data = corpus
    pretrain(None, CFG, batch_size=4, max_steps=3, out_dir=tmp_path / "b4", data_dir=data, **RUN)
    pretrain(None, CFG, batch_size=2, grad_accum=2, max_steps=3, out_dir=tmp_path / "b2x2",
             data_dir=data, **RUN)
    big, state_big = weights(tmp_path / "b4" / "model.safetensors")
    accumulated, state_acc = weights(tmp_path / "b2x2" / "model.safetensors")
    for name in big:
        np.testing.assert_allclose(accumulated[name], big[name], rtol=1e-4, atol=2e-6, err_msg=name)
    np.testing.assert_allclose(state_acc["loop"]["train_losses"], state_big["loop"]["train_losses"],
                               rtol=1e-5)
    # and differs from two plain steps of batch 2, dropout and all: the test can fail
    pretrain(None, CFG, batch_size=2, max_steps=3, out_dir=tmp_path / "b2", data_dir=data, **RUN)
    small, _ = weights(tmp_path / "b2" / "model.safetensors")
    assert max(np.abs(small[n] - big[n]).max() for n in big) > 1e-3


def test_resume_from_shards_is_exact_and_refuses_other_data(tmp_path, corpus):
    _, data = corpus
    pretrain(None, CFG, batch_size=2, max_steps=6, out_dir=tmp_path / "whole", data_dir=data, **RUN)
    pretrain(None, CFG, batch_size=2, max_steps=3, out_dir=tmp_path / "part", data_dir=data, **RUN)
    ckpt = tmp_path / "part" / "model.safetensors"
    pretrain(None, None, max_steps=6, out_dir=tmp_path / "part", data_dir=data, resume=ckpt,
             **{k: v for k, v in RUN.items() if k != "seed"})
    whole, _ = weights(tmp_path / "whole" / "model.safetensors")
    resumed, _ = weights(ckpt)
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)
    other = tmp_path / "other"
    (tmp_path / "o.txt").write_text(text_split_at_a_safe_cut(seed=9), encoding="ascii")
    shards.prepare_data([tmp_path / "o.txt"], other, jobs=1, progress=False)
    with pytest.raises(InputError, match=rf"trained on --data shards of \d+ tokens, sha256 \w+, and "
                       rf"this run gives --data {other} \(\d+ tokens"):
        pretrain(None, None, max_steps=9, out_dir=tmp_path / "part", data_dir=other, resume=ckpt,
                 **{k: v for k, v in RUN.items() if k != "seed"})


def test_resume_refuses_text_for_shards_and_the_reverse(tmp_path, corpus, capsys):
    text, data = corpus
    pretrain(text, CFG, batch_size=2, max_steps=1, out_dir=tmp_path / "text", **RUN)
    pretrain(None, CFG, batch_size=2, max_steps=1, out_dir=tmp_path / "data", data_dir=data, **RUN)
    (tmp_path / "book.txt").write_text(text, encoding="ascii")
    for source, ckpt, was, now in (
            (["--data", str(data)], tmp_path / "text", "a --text file", f"--data {data} ("),
            (["--text", str(tmp_path / "book.txt")], tmp_path / "data", "--data shards of ",
             "a --text file")):
        code = main(["pretrain", *source, "--resume", str(ckpt / "model.safetensors"),
                     "--max-steps", "3", "--out", str(ckpt), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err   # one line
        assert f"was trained on {was}" in err and f"this run gives {now}" in err, err


class FakeRanks:
    """`DataParallel`'s place and sum, for one rank of `size` run alone: its share comes back."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def sum(self, values):
        return list(values)


def test_evaluation_split_over_ranks_adds_up_to_the_whole(corpus):
    from tinygpt.core.random import manual_seed
    from tinygpt.model import GPTModel
    from tinygpt.train.loop import evaluate_model
    from tinygpt.train.pretrain import shard_loaders
    from tinygpt.train.trainer import evaluate_shared
    _, data = corpus
    manual_seed(3)
    model = GPTModel(CFG)
    train_loader, val_loader, _ = shard_loaders(data, 5, CFG["context_length"], 5)
    assert len(val_loader.dataset) % 5   # the last validation batch is short: 3 ranks split it unevenly
    batches = len(val_loader)   # every validation batch, the short last one included

    def evaluate(ranks=None):
        train_loader.set_epoch(0)   # the same shuffled batches each time (as the trainer does)
        if ranks is None:
            return evaluate_model(model, train_loader, val_loader, batches)
        return evaluate_shared(model, train_loader, val_loader, batches, ranks)
    whole = evaluate()
    for size in (2, 3):
        shares = np.array([evaluate(FakeRanks(r, size)) for r in range(size)])
        assert (shares > 0).all() and (shares < 0.7 * np.array(whole)).all()   # each did a part
        np.testing.assert_allclose(shares.sum(axis=0), whole, rtol=1e-6)


def test_the_command_line(tmp_path, corpus, capsys):
    _, data = corpus
    (tmp_path / "cfg.json").write_text(json.dumps(CFG))
    code = main(["pretrain", "--data", str(data), "--config", str(tmp_path / "cfg.json"),
                 "--batch-size", "2", "--grad-accum", "2", "--max-steps", "2", "--eval-freq", "1",
                 "--eval-iter", "1", "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0
    _, state = weights(tmp_path / "run" / "model.safetensors")
    assert state["loop"]["global_step"] == 1 and state["settings"]["grad_accum"] == 2
    assert len(state["loop"]["val_losses"]) == 2
    assert main(["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "r2")]) == 2
    assert "no index.json" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(data), "--text", "x.txt"]) == 2


def fake_shards(folder, tokens):
    """A prepared folder of `tokens` random training tokens, written in 8M-token slices."""
    folder.mkdir()
    rng, left, entries = np.random.default_rng(0), tokens, []
    while left:
        n = min(left, 8 << 20)
        name = f"train_{len(entries):05d}.bin"
        rng.integers(0, 50257, n, dtype=np.uint16).tofile(folder / name)
        entries.append({"name": name, "tokens": n, "sha256": str(len(entries))})
        left -= n
    rng.integers(0, 50257, 1000, dtype=np.uint16).tofile(folder / "val_00000.bin")
    index = {"format": shards.FORMAT, "dtype": "uint16", "train": entries,
             "val": [{"name": "val_00000.bin", "tokens": 1000, "sha256": "v"}]}
    (folder / "index.json").write_text(json.dumps(index))


_PEAK = """
import sys
from tinygpt.train.pretrain import pretrain
cfg = {"vocab_size": 50257, "context_length": 64, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
       "drop_rate": 0.1, "qkv_bias": False}
pretrain(None, cfg, data_dir=sys.argv[1], out_dir=sys.argv[2], batch_size=4, max_steps=3,
         eval_freq=2, eval_iter=2, plot=False, quiet=True, start_context="")
status = open("/proc/self/status").read()
print(int(status.split("VmHWM:")[1].split()[0]))   # this process's peak resident kB
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
def test_training_memory_does_not_grow_with_the_corpus(tmp_path):
    peaks = []
    for name, tokens in (("small", 1 << 20), ("large", 48 << 20)):   # 2 MB and 96 MB of shards
        fake_shards(tmp_path / name, tokens)
        run = subprocess.run([sys.executable, "-c", _PEAK, str(tmp_path / name), str(tmp_path / f"o{name}")],
                             capture_output=True, text=True, timeout=300, env=os.environ)
        assert run.returncode == 0, run.stderr
        peaks.append(int(run.stdout.split()[-1]))
    # loading the large corpus would add 96 MB (384 MB as int64); what grows is the shuffled
    # order of its windows, 4 bytes a window (786k windows of 64 tokens: 3 MB, 6 MB while drawn)
    assert peaks[1] - peaks[0] < 10_000, peaks
