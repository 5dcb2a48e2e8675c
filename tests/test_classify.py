"""Fine-tuning for classification (issue 8, book chapter 6): the SMS spam data, SpamDataset, model
surgery and freezing, the last-token loss against PyTorch, a short training run, saving and
reloading, the command line, and the UCI download helper against a local HTTP server."""
import functools
import hashlib
import http.server
import io
import pathlib
import socket
import threading
import zipfile
from collections import Counter

import numpy as np
import pytest
import torch

import tinygpt as tg
from tinygpt.assets import asset_path
from tinygpt.data import DataLoader, spam
from tinygpt.data.spam import (SpamDataset, balance_and_split, download_sms_spam, read_messages,
                               read_sms_spam, write_csv)
from tinygpt.finetune import classify
from tinygpt.finetune.classify import (calc_accuracy_loader, calc_loss_batch, classify_review,
                                       load_classifier, replace_head, save_classifier,
                                       train_classifier_simple, trainable_parameters)
from tinygpt.model import GPTModel
from tinygpt.optim import AdamW
from tinygpt.tokenizer import get_gpt2_tokenizer
from tinygpt.train import save_checkpoint
from tinygpt.data.download import DownloadError
from reference import torch_gpt

SRC = str(pathlib.Path(__file__).resolve().parent.parent / "src")  # this checkout's package
TINY = {"vocab_size": 50257, "context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 3,
        "drop_rate": 0.0, "qkv_bias": True}


@pytest.fixture(scope="module")
def tok():
    return get_gpt2_tokenizer()


@pytest.fixture(scope="module")
def split():
    return balance_and_split(read_sms_spam())


# --- data ---------------------------------------------------------------------------------------
def test_parse_gives_the_books_rows():
    rows = read_sms_spam()
    labels = [label for label, _ in rows]
    assert (len(rows), labels.count("ham"), labels.count("spam")) == (5572, 4825, 747)
    folded = [text for _, text in rows if "\nham\t" in text]  # the unclosed quote of line 5,082
    assert len(folded) == 1 and folded[0].startswith("Keep ur problems in ur heart")


def test_balanced_split_sizes_and_labels(split):
    train, val, test = split
    assert (len(train), len(val), len(test)) == (1045, 149, 300)
    everything = train + val + test
    assert sum(label for label, _ in everything) == 747  # balanced: 747 spam + 747 ham
    spam_rows = [(1, text) for label, text in read_sms_spam() if label == "spam"]
    assert Counter(r for r in everything if r[0] == 1) == Counter(spam_rows)  # each spam row once
    assert train[0] == (0, "Dude how do you like the buff wind.")  # regression pin of the order


def test_dataset_shapes_padding_and_truncation(split, tok):
    train, val, _ = split
    ds = SpamDataset(train, tok)
    assert ds.max_length == 120  # the book's longest training message
    ids, label = ds[0]
    assert ids.shape == (120,) and ids.dtype == np.int64 and label.dtype == np.int64
    n = len(tok.encode(train[0][1]))
    assert list(ids[:n]) == tok.encode(train[0][1]) and (ids[n:] == 50256).all()
    short = SpamDataset(val, tok, max_length=10, pad_token_id=7)
    assert short.encoded_texts.shape == (149, 10)
    long_text = max(val, key=lambda r: len(r[1]))[1]
    row = short.encoded_texts[[t for _, t in val].index(long_text)]
    assert list(row) == tok.encode(long_text)[:10]  # truncated, no padding
    padded = SpamDataset([(1, "Hi")], tok, max_length=4, pad_token_id=7)
    assert list(padded[0][0]) == tok.encode("Hi") + [7] * (4 - len(tok.encode("Hi")))
    batch = next(iter(DataLoader(ds, batch_size=8)))
    assert batch[0].shape == (8, 120) and batch[1].shape == (8,)


def test_dataset_reads_book_csv_and_raw_tsv(split, tok, tmp_path):
    train = split[0][:20]
    path = write_csv(train, tmp_path / "train.csv")
    assert path.read_text().startswith("Label,Text\n0,Dude how do you like the buff wind.\n")
    assert read_messages(path) == train
    assert SpamDataset(str(path), tok).texts == [t for _, t in train]
    raw = tmp_path / "raw.tsv"
    raw.write_text('ham\tok "fine" then\nspam\tWIN a prize, call now\n')
    ds = SpamDataset(raw, tok)
    assert list(ds.labels) == [0, 1] and ds.texts[0] == 'ok "fine" then'


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("Label,Message\n0,hello\n", "no column 'Text'"),
    ("Text\nhello\n", "no column 'Label'"),
    ("Label,Text\n", "no messages"),
    ("Label,Text\nmaybe,hello\n", "label 'maybe'"),
])
def test_dataset_errors_are_clear(tmp_path, tok, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        SpamDataset(path, tok)


# --- surgery, freezing and the loss -------------------------------------------------------------
def tiny_classifier(trainable="last", seed=1):
    tg.manual_seed(seed)
    model = GPTModel(TINY)
    return replace_head(model, num_classes=2, trainable=trainable, seed=seed)


def test_surgery_freezes_all_but_last_block_final_norm_and_head():
    model = tiny_classifier()
    assert model.out_head.weight.shape == (2, 32) and model.out_head.bias.shape == (2,)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()
                         if n.startswith(("trf_blocks.2.", "final_norm.", "out_head."))}
    assert {n for n, p in tiny_classifier("head").named_parameters() if p.requires_grad} == {
        "out_head.weight", "out_head.bias"}
    assert all(p.requires_grad for p in tiny_classifier("all").parameters())


def test_frozen_parameters_get_no_gradient_and_no_update():
    model = tiny_classifier()
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    optimizer = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)  # all of them, as the book does
    inputs = np.random.default_rng(0).integers(0, 50257, size=(4, 12))
    for _ in range(2):
        optimizer.zero_grad()
        calc_loss_batch(inputs, np.array([0, 1, 1, 0]), model).backward()
        for name, p in model.named_parameters():
            assert (p.grad is not None) == p.requires_grad, name
        optimizer.step()
    for name, p in model.named_parameters():
        assert np.array_equal(p.data, before[name]) != p.requires_grad, name


def torch_twin(model):
    twin = torch_gpt.GPTModel(TINY)
    twin.out_head = torch.nn.Linear(TINY["emb_dim"], 2)
    twin.load_state_dict(torch_gpt.to_torch_state_dict(model.state_dict()), strict=True)
    for name, p in twin.named_parameters():
        p.requires_grad_(name.startswith(("trf_blocks.2.", "final_norm.", "out_head.")))
    return twin


def test_last_token_loss_and_grads_match_pytorch():
    model = tiny_classifier().to(np.float64)
    twin = torch_twin(model).double()
    inputs = np.random.default_rng(1).integers(0, 50257, size=(3, 17))
    targets = np.array([1, 0, 1])
    loss = calc_loss_batch(inputs, targets, model)
    loss.backward()
    ref = torch.nn.functional.cross_entropy(twin(torch.from_numpy(inputs))[:, -1, :],
                                            torch.from_numpy(targets))
    ref.backward()
    assert loss.dtype == np.float64
    assert abs(loss.item() - ref.item()) < 1e-10
    grads = {n: p.grad for n, p in twin.named_parameters() if p.requires_grad}
    assert set(grads) == {n for n, p in model.named_parameters() if p.requires_grad}
    params = dict(model.named_parameters())
    for name, g in grads.items():
        np.testing.assert_allclose(params[name].grad, g.numpy(), rtol=1e-8, atol=1e-10, err_msg=name)


# --- training, classifying, saving ------------------------------------------------------------
def test_short_training_beats_chance_on_held_out_messages(split, tok):
    train, _, test = split
    train_ds = SpamDataset(train[:640], tok, max_length=TINY["context_length"])
    held_out = SpamDataset(test[:160], tok, max_length=TINY["context_length"])
    model = tiny_classifier(seed=3)
    optimizer = AdamW(trainable_parameters(model), lr=3e-3, weight_decay=0.1)
    train_loader = DataLoader(train_ds, batch_size=16, shuffle=True, drop_last=True, seed=3)
    val_loader = DataLoader(held_out, batch_size=32)
    before = calc_accuracy_loader(val_loader, model)
    losses, val_losses, train_accs, _, seen = train_classifier_simple(
        model, train_loader, val_loader, optimizer, num_epochs=3, eval_freq=20, eval_iter=2, quiet=True)
    after = calc_accuracy_loader(val_loader, model)
    assert seen == 3 * 40 * 16 and len(losses) == len(val_losses) == 6 and len(train_accs) == 3
    assert after >= 0.75 and after > before, (before, after)


def test_classifier_saves_reloads_and_classifies(tmp_path, tok):
    model = tiny_classifier()
    path = save_classifier(tmp_path / "clf.safetensors", model, max_length=20)
    loaded, state = load_classifier(path)
    assert state["max_length"] == 20 and state["num_classes"] == 2
    text = "You are a winner you have been specially selected to receive $1000 cash"
    ids = np.asarray([tok.encode(text)[:20]])
    with tg.no_grad():  # same path in both: with grad on, only `model`'s frozen blocks pack QKV
        np.testing.assert_array_equal(classify.last_token_logits(loaded, ids).data,
                                      classify.last_token_logits(model.eval(), ids).data)
    assert classify_review(text, loaded, tok, max_length=20) in ("spam", "not spam")
    with pytest.raises(ValueError, match="not a saved classifier"):
        save_checkpoint(tmp_path / "lm.safetensors", GPTModel(TINY), config=TINY)
        load_classifier(tmp_path / "lm.safetensors")


# The book's two new messages (section 6.8).
BOOK_SPAM = ("You are a winner you have been specially selected to receive $1000 cash or a $2000 "
             "award.")
BOOK_HAM = "Hey, just wanted to check if we're still on for dinner tonight? Let me know!"


@pytest.mark.slow
def test_offline_recipe_gets_the_books_messages_and_95_percent(tmp_path, tok):
    """The chapter offline, in full, as a learner runs it: examples/ch06_classify.py (which
    also pins OpenBLAS to one thread, its fast setting: about a minute of CPU). Held-out test
    accuracy on the book's split, and the book's two messages, in the example's output and
    classified again by the reloaded classifier."""
    import os
    import subprocess
    import sys
    root = pathlib.Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(root / "examples" / "ch06_classify.py"), "--out",
                           str(tmp_path), "--quiet"], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": SRC})
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"    spam: {BOOK_SPAM}" in done.stdout.splitlines()
    assert f"not spam: {BOOK_HAM}" in done.stdout.splitlines()
    model, state = load_classifier(tmp_path / "classifier.safetensors")
    assert state["accuracy"]["test"] >= 0.95, state["accuracy"]
    labels = [classify_review(text, model, tok, max_length=state["max_length"])
              for text in (BOOK_SPAM, BOOK_HAM)]
    assert labels == ["spam", "not spam"]


def test_offline_base_model_starts_from_gpt2s_embedding_scale():
    model = classify.load_base_model(None, seed=5)
    assert model.tok_emb.weight.data.std() == pytest.approx(0.02, rel=0.01)
    assert model.pos_emb.weight.data.std() == pytest.approx(0.01, rel=0.05)
    assert model.trf_blocks[0].att.W_query.weight.data.std() > 0.03  # the rest as GPTModel draws it


def small_collection(tmp_path, n_ham=60, n_spam=40):
    """A short raw collection (no quotes or folded lines) for fast end-to-end runs."""
    rows = [r for r in read_sms_spam() if '"' not in r[1] and "\n" not in r[1]]
    small = [r for r in rows if r[0] == "ham"][:n_ham] + [r for r in rows if r[0] == "spam"][:n_spam]
    path = tmp_path / "small.tsv"
    path.write_text("".join(f"{label}\t{text}\n" for label, text in small), encoding="utf-8")
    return path


def test_run_classification_from_local_gpt2_weights(tmp_path):
    """The --weights path: a GPT-2 folder (Hugging Face layout) gets the book's surgery and
    setup; its 32-token context is shorter than the longest message, so messages are cut."""
    from tinygpt.weights import save_pretrained
    tg.manual_seed(0)
    save_pretrained(GPTModel(TINY), tmp_path / "gpt2-tiny")
    result = classify.run_classification(weights=str(tmp_path / "gpt2-tiny"), out_dir=tmp_path / "run",
                                         num_epochs=1, data_path=small_collection(tmp_path),
                                         quiet=True, plot=False)
    model = result["model"]
    assert result["max_length"] == TINY["context_length"]
    assert not model.tok_emb.weight.requires_grad and model.trf_blocks[-1].norm1.scale.requires_grad
    _, state = load_classifier(result["checkpoint"])
    assert state["setup"]["lr"] == 5e-5 and state["setup"]["trainable"] == "last"
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["examples_seen"] == 56 // 8 * 8


def test_cli_finetune_then_classify(tmp_path, monkeypatch, capsys):
    from tinygpt import cli
    monkeypatch.setattr(classify, "OFFLINE_CONFIG", {**TINY, "context_length": 128})
    data = small_collection(tmp_path)
    out = tmp_path / "run"
    assert cli.main(["finetune-classify", "--data", str(data), "--epochs", "2", "--eval-freq", "3",
                     "--out", str(out), "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"train.csv", "validation.csv", "test.csv",
                                                "classifier.safetensors", "loss-plot.png",
                                                "accuracy-plot.png"}
    assert len(read_messages(out / "train.csv")) == int(0.7 * 80)
    assert cli.main(["classify", "--model", str(out), "--text", "Free entry! Txt WIN now",
                     "--text", "See you at dinner"]) == 0
    lines = capsys.readouterr().out.splitlines()  # "label: message", labels right-aligned
    assert [line.split(": ", 1)[1] for line in lines] == ["Free entry! Txt WIN now", "See you at dinner"]
    assert {line.split(": ", 1)[0] for line in lines} <= {"    spam", "not spam"}
    assert cli.main(["classify", "--model", str(tmp_path / "missing"), "--text", "x"]) == 2
    assert cli.main(["finetune-classify", "--epochs", "0", "--out", str(out)]) == 2


def test_finetune_package_imports_no_command_line_code():
    """The fine-tuning commands live in tinygpt/cli/finetune.py; tinygpt.finetune (the library)
    must not import tinygpt.cli (layers import leftwards: finetune -> cli, never back)."""
    import os
    import subprocess
    import sys
    code = ("import sys, tinygpt.finetune, tinygpt.finetune.dpo_train; "
            "print(sorted(m for m in sys.modules if m.startswith('tinygpt.cli')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": SRC})
    assert done.stdout.strip() == "[]"


# --- download -----------------------------------------------------------------------------------
def zip_bytes(name, data):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
        zf.writestr("readme", "SMS Spam Collection v.1\n")
    return buf.getvalue()


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www; yields its base URL."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_extracts_and_verifies(server, tmp_path):
    www, base = server
    original = asset_path("SMSSpamCollection.tsv").read_bytes()
    (www / "sms.zip").write_bytes(zip_bytes("SMSSpamCollection", original))
    dest = tmp_path / "data"
    path = download_sms_spam(dest, url=f"{base}/sms.zip", quiet=True)
    assert path == dest / "SMSSpamCollection.tsv" and path.read_bytes() == original
    assert [p.name for p in dest.iterdir()] == ["SMSSpamCollection.tsv"]  # the zip is removed
    (www / "sms.zip").unlink()
    assert download_sms_spam(dest, url=f"{base}/sms.zip", quiet=True) == path  # no request needed


def test_download_wrong_checksum_leaves_no_file(server, tmp_path):
    www, base = server
    (www / "sms.zip").write_bytes(zip_bytes("SMSSpamCollection", b"ham\tnot the collection\n"))
    dest = tmp_path / "data"
    with pytest.raises(OSError, match="sha256"):
        download_sms_spam(dest, url=f"{base}/sms.zip", quiet=True)
    assert list(dest.iterdir()) == []
    good = zip_bytes("SMSSpamCollection", asset_path("SMSSpamCollection.tsv").read_bytes())
    (www / "sms.zip").write_bytes(good)
    with pytest.raises(OSError, match="sha256"):  # a wrong pin of the archive itself
        download_sms_spam(dest, url=f"{base}/sms.zip", zip_sha256="0" * 64, quiet=True)
    assert list(dest.iterdir()) == []
    (www / "sms.zip").write_bytes(b"not a zip")
    with pytest.raises(OSError, match="valid zip"):
        download_sms_spam(dest, url=f"{base}/sms.zip", quiet=True)
    assert list(dest.iterdir()) == []
    with pytest.raises(DownloadError, match="404"):
        download_sms_spam(dest, url=f"{base}/missing.zip", quiet=True)
    assert list(dest.iterdir()) == []


def test_download_server_down_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="could not download"):
        download_sms_spam(tmp_path / "data", url=f"http://127.0.0.1:{port}/sms.zip", quiet=True,
                          timeout=5)
    assert not (tmp_path / "data" / "SMSSpamCollection.tsv").exists()


def test_shipped_file_matches_recorded_checksum():
    data = asset_path("SMSSpamCollection.tsv").read_bytes()
    assert hashlib.sha256(data).hexdigest() == spam.SMS_SPAM_SHA256
