"""`tinygpt prepare-data` (tinygpt.data.shards): shards equal the in-memory tokenization, an
interrupted preparation resumes to the same shards, memory does not grow with the corpus."""
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from tinygpt.cli import main
from tinygpt.data import GPTDatasetV1
from tinygpt.data import shards
from tinygpt.errors import InputError
from tinygpt.tokenizer import get_gpt2_tokenizer

WORDS = ["alpha", "Beta", "gamma,", "délta", "The", "end.", "of", "  words", "x\t", "'s", "42",
         "naïve", "—", "\U0001F600", "tab\tbed", "Über"]


def make_text(seed, lines):
    rng = random.Random(seed)
    return "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 9)))
                   + rng.choice(["\n", "\n", "\n\n", " \n", "\r\n"]) for _ in range(lines))


def write_corpus(folder, n_files, lines, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    texts = [make_text(seed + i, lines) for i in range(n_files)]
    for i, text in enumerate(texts):
        (folder / f"book{i}.txt").write_text(text, encoding="utf-8", newline="")
    return texts


def read_split(out, split):
    names = sorted(p.name for p in out.glob(f"{split}_*.bin"))
    return np.concatenate([np.fromfile(out / n, dtype="<u2") for n in names]).astype(np.int64)


def encode(text):
    return np.asarray(get_gpt2_tokenizer().encode(text, allowed_special={"<|endoftext|>"}))


def test_shards_equal_the_in_memory_tokenization(tmp_path):
    texts = write_corpus(tmp_path / "in", 4, 400)
    index = shards.prepare_data([tmp_path / "in"], tmp_path / "out", jobs=2, shard_bytes=6000,
                                piece_bytes=700, progress=False)
    out = tmp_path / "out"
    train, val = read_split(out, "train"), read_split(out, "val")
    expected = encode("<|endoftext|>".join(texts))
    np.testing.assert_array_equal(np.concatenate([train, val]), expected)
    assert len(index["train"]) > 3 and len(index["val"]) >= 1
    assert index["train_tokens"] == len(train) and index["val_tokens"] == len(val)
    assert 0.05 < len(val) / len(expected) < 0.15
    assert [f["path"] for f in index["files"]] == [str(tmp_path / "in" / f"book{i}.txt") for i in range(4)]
    entry = index["train"][1]
    assert entry["sha256"] == shards._file_digest(out / entry["name"])
    # the windows read from the memory maps are GPTDatasetV1's windows of the training stream
    windows = shards.ShardWindows(out, "train", max_length=37)
    text_windows = GPTDatasetV1(get_gpt2_tokenizer().decode(train.tolist()), max_length=37, stride=37)
    ids = windows.tokens(0, windows.num_tokens)
    np.testing.assert_array_equal(ids, train)
    assert len(windows) == -(-(len(train) - 37) // 37)
    for i in (0, 1, len(windows) // 2, len(windows) - 1):
        x, y = windows[i]
        np.testing.assert_array_equal(x, train[i * 37:i * 37 + 37])
        np.testing.assert_array_equal(y, train[i * 37 + 1:i * 37 + 38])
    assert len(text_windows) > 0


def test_globs_files_and_gutenberg_stripping(tmp_path):
    body = make_text(7, 200)
    book = ("The Project Gutenberg eBook of Nothing\nLicense blah\n"
            "*** START OF THE PROJECT GUTENBERG EBOOK NOTHING ***\n" + body
            + "*** END OF THE PROJECT GUTENBERG EBOOK NOTHING ***\nMore license text\n")
    (tmp_path / "pg1.txt").write_text(book, encoding="utf-8", newline="")
    (tmp_path / "plain.md").write_text("Just a note\nwith lines\n" * 50, encoding="utf-8")
    code = main(["prepare-data", str(tmp_path / "pg*.txt"), str(tmp_path / "plain.md"),
                 "--out", str(tmp_path / "out"), "--strip-gutenberg", "--jobs", "1", "--quiet"])
    assert code == 0
    stream = np.concatenate([read_split(tmp_path / "out", "train"), read_split(tmp_path / "out", "val")])
    np.testing.assert_array_equal(stream, encode(body + "<|endoftext|>" + "Just a note\nwith lines\n" * 50))


def test_interrupted_preparation_resumes_to_the_same_shards(tmp_path, monkeypatch):
    write_corpus(tmp_path / "in", 3, 300, seed=3)
    options = dict(jobs=1, shard_bytes=3000, piece_bytes=900, progress=False)
    shards.prepare_data([tmp_path / "in"], tmp_path / "whole", **options)
    real, calls = shards.write_shard, []

    def dies_on_the_fourth(*args):
        calls.append(args[1])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(shards, "write_shard", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        shards.prepare_data([tmp_path / "in"], tmp_path / "cut", **options)
    monkeypatch.setattr(shards, "write_shard", real)
    out = tmp_path / "cut"
    assert not (out / "index.json").exists()
    kept = {n: (out / n).stat().st_mtime_ns for n in calls[:3]}
    assert sorted(p.name for p in out.glob("*.bin")) == sorted(calls[:3])  # nothing half-written
    index = shards.prepare_data([tmp_path / "in"], out, **options)
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept
    whole = shards.read_index(tmp_path / "whole")
    assert index["train"] == whole["train"] and index["val"] == whole["val"]
    for entry in index["train"] + index["val"]:
        assert (out / entry["name"]).read_bytes() == (tmp_path / "whole" / entry["name"]).read_bytes()


def test_refusals(tmp_path):
    write_corpus(tmp_path / "in", 2, 400)
    shards.prepare_data([tmp_path / "in"], tmp_path / "out", jobs=1, progress=False)
    (tmp_path / "in" / "book9.txt").write_text("another\nbook\n", encoding="utf-8")
    with pytest.raises(InputError, match="other inputs"):
        shards.prepare_data([tmp_path / "in"], tmp_path / "out", jobs=1, progress=False)
    with pytest.raises(InputError, match="no file"):
        shards.prepare_data([tmp_path / "nothing*.txt"], tmp_path / "o2", progress=False)
    (tmp_path / "one.txt").write_text("one line only", encoding="utf-8")
    with pytest.raises(InputError, match="too small"):
        shards.prepare_data([tmp_path / "one.txt"], tmp_path / "o3", progress=False)
    (tmp_path / "bad.txt").write_bytes(b"ok\nline\n\xff\xfe\n" * 20)
    with pytest.raises(InputError, match="not UTF-8"):
        shards.prepare_data([tmp_path / "bad.txt"], tmp_path / "o4", jobs=1, progress=False)
    with pytest.raises(InputError, match="no index.json"):
        shards.read_index(tmp_path / "o4")
    (tmp_path / "out" / "val_00000.bin").write_bytes(b"\0\0")
    with pytest.raises(InputError, match="prepare the folder again"):
        shards.ShardWindows(tmp_path / "out", "val", 4)


_PEAK = """
import sys
from tinygpt.data import shards
shards.prepare_data([sys.argv[1]], sys.argv[2], jobs=1, shard_bytes=1 << 20, piece_bytes=1 << 16,
                    progress=False)
status = open("/proc/self/status").read()
print(int(status.split("VmHWM:")[1].split()[0]))   # this process's peak resident kB
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
def test_memory_does_not_grow_with_the_corpus(tmp_path):
    peaks = []
    for size, lines in (("small", 8_000), ("large", 64_000)):   # about 0.3 MB and 2.6 MB a file
        write_corpus(tmp_path / size, 3, lines)
        run = subprocess.run([sys.executable, "-c", _PEAK, str(tmp_path / size), str(tmp_path / f"o{size}")],
                             capture_output=True, text=True, timeout=300, env=os.environ)
        assert run.returncode == 0, run.stderr
        peaks.append(int(run.stdout.split()[-1]))
    large_bytes = sum(p.stat().st_size for p in (tmp_path / "large").iterdir())
    # reading the large corpus whole would add its 8 MB of text and a list of 2M+ token ints
    assert peaks[1] - peaks[0] < 6_000, (peaks, large_bytes)
