"""`tinygpt prepare-data --tokenizer`: shards of a model's own tokenizer (a Hugging Face
tokenizer.json, or the folder holding it) equal its tokenization of each document with its
end-of-text token between them, uint32 past 65,536 tokens, and `pretrain --data` trains on them."""
import json

import numpy as np
import pytest

from tinygpt.cli import main
from tinygpt.data import shards
from tinygpt.train import read_checkpoint
from tinygpt.train.pretrain import pretrain

from tokenizer_files import write_qwen3_tokenizer_json
from test_shards import make_text

pytest.importorskip("tokenizers", reason="Hugging Face's tokenizers library is not installed")
HIGH = 70_000   # the first id of the byte tokens in the uint32 tokenizer


def stream(out, dtype):
    names = sorted(p.name for p in out.glob("train_*.bin")) + sorted(p.name for p in out.glob("val_*.bin"))
    return np.concatenate([np.fromfile(out / n, dtype=dtype) for n in names]).astype(np.int64)


def expected(tokenizer_file, texts):
    """Each document tokenized alone, the tokenizer's end-of-text id between them."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(tokenizer_file))
    eot = tok.token_to_id("<|endoftext|>")
    ids = []
    for i, text in enumerate(texts):
        ids += tok.encode(text, add_special_tokens=False).ids + ([eot] if i + 1 < len(texts) else [])
    return np.asarray(ids)


def write_texts(folder, n, lines, seed):
    """`n` documents of `lines` lines each (or of each count in `lines`)."""
    folder.mkdir()
    counts = lines if isinstance(lines, list) else [lines] * n
    texts = [make_text(seed + i, count).replace("\r", "") for i, count in enumerate(counts)]
    for i, text in enumerate(texts):
        (folder / f"doc{i}.txt").write_text(text, encoding="utf-8", newline="")
    return texts


def high_id_tokenizer(path):
    """A byte-level tokenizer of 70,257 tokens whose 256 byte tokens have ids 70,000 and up (no
    merges: one token a byte), and <|endoftext|>: every id it gives needs uint32."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    vocab = {f"<fill{i}>": i for i in range(HIGH)}
    vocab.update({c: HIGH + i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(path))
    return path


def test_a_models_tokenizer_folder_gives_its_tokens(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    tokenizer = write_qwen3_tokenizer_json(folder / "tokenizer.json", vocab_size=400)
    texts = write_texts(tmp_path / "in", 3, 300, seed=11)
    index = shards.prepare_data([tmp_path / "in"], tmp_path / "out", jobs=2, shard_bytes=4000,
                                piece_bytes=600, progress=False, tokenizer=folder)
    assert index["dtype"] == "uint16" and index["tokenizer"]["file"] == str(tokenizer)
    assert index["eot_id"] == json.loads(tokenizer.read_text())["added_tokens"][0]["id"]
    assert len(index["train"]) > 3   # many pieces: the cuts are exercised
    np.testing.assert_array_equal(stream(tmp_path / "out", "<u2"), expected(tokenizer, texts))
    # GPT-2's ids for the same text differ: the option is used
    gpt2 = shards.prepare_data([tmp_path / "in"], tmp_path / "gpt2", jobs=1, progress=False)
    assert gpt2["tokenizer"] == "gpt2" and gpt2["train_tokens"] != index["train_tokens"]


def test_cuts_are_checked_against_the_tokenizer(tmp_path):
    """A tokenizer that marks the start of every encoded text (a SentencePiece-style prefix)
    cannot be cut anywhere: each document stays one piece, and the ids are still exact."""
    from tokenizers import Tokenizer, pre_tokenizers
    tok = Tokenizer.from_file(str(write_qwen3_tokenizer_json(tmp_path / "base.json", 300)))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(prepend_scheme="always"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.save(str(tmp_path / "prefix.json"))
    # the 90% point falls in the third document, which cannot be cut: the last two are validation
    texts = write_texts(tmp_path / "in", 5, [200, 200, 200, 15, 25], seed=5)
    index = shards.prepare_data([tmp_path / "in"], tmp_path / "out", jobs=1, piece_bytes=300,
                                progress=False, tokenizer=tmp_path / "prefix.json")
    np.testing.assert_array_equal(stream(tmp_path / "out", "<u2"),
                                  expected(tmp_path / "prefix.json", texts))
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    pieces = [piece for group in plan["shards"].values() for piece in group]
    assert len(pieces) == len(texts), pieces   # no cut inside a document
    assert index["val_tokens"] > 0


def test_uint32_shards_and_training_on_them(tmp_path, capsys):
    tokenizer = high_id_tokenizer(tmp_path / "tokenizer.json")
    texts = write_texts(tmp_path / "in", 2, 120, seed=2)
    code = main(["prepare-data", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                 "--tokenizer", str(tokenizer), "--jobs", "1", "--quiet"])
    assert code == 0 and "(uint32 ids)" in capsys.readouterr().out
    index = shards.read_index(tmp_path / "out")
    assert index["dtype"] == "uint32" and index["vocab_size"] == HIGH + 257
    ids = stream(tmp_path / "out", "<u4")
    np.testing.assert_array_equal(ids, expected(tokenizer, texts))
    assert ids.min() >= HIGH
    x, y = shards.ShardWindows(tmp_path / "out", "train", 8)[3]
    np.testing.assert_array_equal(x, ids[24:32])
    np.testing.assert_array_equal(y, ids[25:33])
    cfg = {"vocab_size": HIGH + 257, "context_length": 8, "emb_dim": 8, "n_heads": 2,
           "n_layers": 1, "drop_rate": 0.0, "qkv_bias": False}
    _, result = pretrain(None, cfg, data_dir=tmp_path / "out", out_dir=tmp_path / "run",
                         batch_size=2, max_steps=2, eval_freq=1, eval_iter=1, plot=False,
                         quiet=True, start_context="Every effort")   # no GPT-2 sample of them
    _, _, state = read_checkpoint(result["checkpoint"], optimizer=False)
    assert state["loop"]["global_step"] == 1 and np.isfinite(state["loop"]["val_losses"]).all()
    with pytest.raises(ValueError, match="smaller than the shards' tokenizer's 70257 tokens"):
        pretrain(None, {**cfg, "vocab_size": 50257}, data_dir=tmp_path / "out",
                 out_dir=tmp_path / "r2", max_steps=1, plot=False, quiet=True)
