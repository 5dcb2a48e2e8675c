"""Instruction fine-tuning (book chapter 7): data loading and format, the collate function, the
Ollama judge against a local fake server, offline scores, and a short end-to-end run."""
import argparse
import http.server
import json
import os
import socket
import threading

import numpy as np
import pytest
import torch

from tinygpt.assets import asset_path
from tinygpt.data.instruct import (
    InstructionDataset,
    MalformedEntryError,
    custom_collate_fn,
    format_input,
    load_instruction_data,
    split_instruction_data,
)
from tinygpt.finetune.instruct import extract_response, run_instruction_finetune
from tinygpt.finetune.scoring import (
    judge_prompt,
    offline_scores,
    parse_score,
    query_ollama,
    rouge_l_f1,
    score_with_ollama,
)
from tinygpt.errors import InputError
from tinygpt.tokenizer import get_gpt2_tokenizer

E = 50256  # <|endoftext|>, the padding token
X = -100   # ignore_index


# --- data ------------------------------------------------------------------------------------

def test_format_input_matches_the_book():
    preamble = ("Below is an instruction that describes a task. Write a response that "
                "appropriately completes the request.")
    assert format_input({"instruction": "Rewrite it.", "input": "It is cold.", "output": "x"}) == (
        preamble + "\n\n### Instruction:\nRewrite it.\n\n### Input:\nIt is cold.")
    assert format_input({"instruction": "Name a color.", "input": "", "output": "Red"}) == (
        preamble + "\n\n### Instruction:\nName a color.")


def test_shipped_data_and_book_split():
    data = load_instruction_data(asset_path("instruction-data.json"))
    assert len(data) == 1100
    train, test, val = split_instruction_data(data)
    assert (len(train), len(test), len(val)) == (935, 110, 55)
    assert train[0] == data[0] and test[0] == data[935] and val[0] == data[1045]
    assert split_instruction_data(data).val[-1] == data[-1]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = {"instruction": "Say hi.", "input": "", "output": "Hi."}


@pytest.mark.parametrize("entries, message", [
    ([GOOD, GOOD, {"instruction": "x", "input": ""}], r"entry 2 is malformed: missing key 'output'"),
    ([GOOD, {"instruction": "x", "input": 3, "output": "y"}], r"entry 1 .*'input' must be a string"),
    ([GOOD, ["x", "y"]], r"entry 1 .*expected a JSON object"),
    ([{"instruction": " ", "input": "", "output": "y"}], r"entry 0 .*'instruction' is empty"),
])
def test_loader_reports_first_malformed_entry(tmp_path, entries, message):
    with pytest.raises(MalformedEntryError, match=message):
        load_instruction_data(write(tmp_path, "d.json", json.dumps(entries)))


def test_loader_json_lines(tmp_path):
    lines = [json.dumps(GOOD), "", json.dumps({"instruction": "a", "output": "b", "id": 7})]
    data = load_instruction_data(write(tmp_path, "d.jsonl", "\n".join(lines) + "\n"))
    assert data == [GOOD, {"instruction": "a", "input": "", "output": "b", "id": 7}]
    bad = [json.dumps(GOOD), json.dumps(GOOD), "{not json", json.dumps(GOOD)]
    with pytest.raises(MalformedEntryError, match=r"entry 2 \(line 3\) is malformed: not valid JSON"):
        load_instruction_data(write(tmp_path, "bad.jsonl", "\n".join(bad)))
    with pytest.raises(MalformedEntryError, match=r"entry 1 \(line 2\).*missing key 'instruction'"):
        load_instruction_data(write(tmp_path, "bad2.jsonl", json.dumps(GOOD) + '\n{"output": "o"}'))
    with pytest.raises(ValueError, match="empty"):
        load_instruction_data(write(tmp_path, "empty.json", "\n"))
    with pytest.raises(ValueError, match="not valid JSON"):
        load_instruction_data(write(tmp_path, "broken.json", "[" + json.dumps(GOOD) + ","))
    with pytest.raises(FileNotFoundError):
        load_instruction_data(tmp_path / "missing.json")


def test_dataset_pretokenizes_prompt_and_response():
    tok = get_gpt2_tokenizer()
    entries = [GOOD, {"instruction": "Add.", "input": "1+1", "output": "2"}]
    ds = InstructionDataset(entries, tok)
    for i, e in enumerate(entries):
        assert ds[i] == tok.encode(format_input(e) + "\n\n### Response:\n" + e["output"])
        assert ds.prompt_lengths[i] == len(tok.encode(format_input(e)))
    pairs = InstructionDataset(entries, tok, with_prompt_lengths=True)
    assert pairs[1] == (ds.prompt_lengths[1], ds[1]) and len(pairs) == 2


# --- collate ---------------------------------------------------------------------------------

BATCH = [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]  # the book's section-7.3 example


def test_collate_pads_shifts_and_masks_like_the_book():
    inputs, targets = custom_collate_fn(BATCH)
    assert inputs.dtype == np.int64 and targets.dtype == np.int64
    np.testing.assert_array_equal(inputs, [[0, 1, 2, 3, 4], [5, 6, E, E, E], [7, 8, 9, E, E]])
    np.testing.assert_array_equal(targets, [[1, 2, 3, 4, E], [6, E, X, X, X], [8, 9, E, X, X]])


def test_collate_truncates():
    inputs, targets = custom_collate_fn(BATCH, allowed_max_length=3)
    np.testing.assert_array_equal(inputs, [[0, 1, 2], [5, 6, E], [7, 8, 9]])
    np.testing.assert_array_equal(targets, [[1, 2, 3], [6, E, X], [8, 9, E]])


def test_collate_masks_the_prompt():
    # prompt lengths 2, 1, 3: the first L-1 targets are prompt tokens
    pairs = [(2, BATCH[0]), (1, BATCH[1]), (3, BATCH[2])]
    _, targets = custom_collate_fn(pairs, mask_prompt=True)
    np.testing.assert_array_equal(targets, [[X, 2, 3, 4, E], [6, E, X, X, X], [X, X, E, X, X]])
    _, same = custom_collate_fn(BATCH, mask_prompt=True, prompt_lengths=[2, 1, 3])
    np.testing.assert_array_equal(same, targets)
    _, unmasked = custom_collate_fn(pairs)  # pairs without the flag: lengths unused
    np.testing.assert_array_equal(unmasked, custom_collate_fn(BATCH)[1])
    _, cut = custom_collate_fn(pairs, mask_prompt=True, allowed_max_length=2, ignore_index=-1,
                               pad_token_id=99)
    np.testing.assert_array_equal(cut, [[-1, 2], [6, 99], [-1, -1]])
    with pytest.raises(ValueError, match="prompt lengths"):
        custom_collate_fn(BATCH, mask_prompt=True)


def book_collate_torch(batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None):
    """The book's custom_collate_fn (section 7.3), verbatim in PyTorch: the oracle."""
    batch_max_length = max(len(item) + 1 for item in batch)
    inputs_lst, targets_lst = [], []
    for item in batch:
        new_item = item.copy()
        new_item += [pad_token_id]
        padded = new_item + [pad_token_id] * (batch_max_length - len(new_item))
        inputs = torch.tensor(padded[:-1])
        targets = torch.tensor(padded[1:])
        mask = targets == pad_token_id
        indices = torch.nonzero(mask).squeeze()
        if indices.numel() > 1:
            targets[indices[1:]] = ignore_index
        if allowed_max_length is not None:
            inputs = inputs[:allowed_max_length]
            targets = targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    return torch.stack(inputs_lst), torch.stack(targets_lst)


@pytest.mark.parametrize("seed", range(5))
def test_collate_equals_book_code_on_random_batches(seed):
    rng = np.random.default_rng(seed)
    batch = [rng.integers(0, 50257, rng.integers(1, 12)).tolist() for _ in range(rng.integers(1, 6))]
    limit = [None, 4, 50][seed % 3]
    ours = custom_collate_fn(batch, allowed_max_length=limit)
    theirs = book_collate_torch(batch, allowed_max_length=limit)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b.numpy())


# --- responses and offline scores ---------------------------------------------------------------

def test_extract_response_and_offline_scores():
    prompt = format_input(GOOD)
    assert extract_response(prompt + "\n\n### Response:\nHi there. ", prompt) == "Hi there."
    assert rouge_l_f1("the cat sat", "the cat sat") == 1.0
    assert rouge_l_f1("", "") == 1.0 and rouge_l_f1("x", "") == 0.0
    # LCS "a c" (2): precision 2/3, recall 2/4 -> F1 4/7
    assert rouge_l_f1("a b c", "a x c y") == pytest.approx(4 / 7)
    entries = [{**GOOD, "model_response": "hi"}, {**GOOD, "model_response": "Bye bye"}]
    summary = offline_scores(entries)
    assert summary == {"rouge_l_f1": 0.5, "exact_match": 0.5, "num_entries": 2}
    assert entries[0]["exact_match"] and entries[1]["rouge_l_f1"] == 0.0
    with pytest.raises(InputError, match="no entries to score"):
        offline_scores([])  # not "ROUGE-L 0.000, 0.0%"


def test_data_without_test_entries_is_refused_before_training(tmp_path):
    data = json.loads(asset_path("instruction-data.json").read_text())[:9]  # 7 train, 0 test, 2 val
    path = write(tmp_path, "data.json", json.dumps(data))
    with pytest.raises(InputError, match=r"too few to split .*\(7/0/2\)"):
        run_instruction_finetune(data_path=path, out_dir=tmp_path / "run", model_config=TINY,
                                 quiet=True)
    assert not (tmp_path / "run").exists()  # refused before any training or writing


# --- the Ollama judge against a fake local server ------------------------------------------------

class FakeOllama(http.server.BaseHTTPRequestHandler):
    """Speaks /api/chat like Ollama: chunked JSON lines, the last one with "done": true."""
    protocol_version = "HTTP/1.1"
    answers = []   # one behaviour per request, consumed in order
    requests = []

    def log_message(self, *args):
        pass

    def chunk(self, data: bytes):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, self.headers["Content-Type"], body))
        kind, payload = type(self).answers.pop(0)
        if kind == "http-error":
            data = json.dumps({"error": payload}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if kind == "good":
            for piece in payload:
                self.chunk(json.dumps({"model": body["model"], "created_at": "2024-06-01T00:00:00Z",
                                       "message": {"role": "assistant", "content": piece},
                                       "done": False}).encode() + b"\n")
            self.chunk(json.dumps({"model": body["model"], "message": {"role": "assistant",
                                   "content": ""}, "done": True, "done_reason": "stop",
                                   "total_duration": 123}).encode() + b"\n")
        elif kind == "raw":
            self.chunk(payload)
        elif kind == "drop":  # one line, then the connection dies mid-stream
            self.chunk(json.dumps({"message": {"role": "assistant", "content": "8"},
                                   "done": False}).encode() + b"\n")
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def ollama():
    FakeOllama.answers, FakeOllama.requests = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeOllama)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield FakeOllama, f"http://127.0.0.1:{server.server_address[1]}/api/chat"
    server.shutdown()
    server.server_close()


ENTRY = {"instruction": "Name a color.", "input": "", "output": "Red", "model_response": "Blue"}


def test_ollama_good_answer_and_book_request(ollama):
    fake, url = ollama
    fake.answers += [("good", ["8", "5"]), ("good", ["I would say 40."]), ("good", ["great"])]
    assert query_ollama("hello", "llama3", url, timeout=10) == "85"
    path, ctype, body = fake.requests[0]
    assert path == "/api/chat" and ctype == "application/json"
    assert body == {"model": "llama3", "messages": [{"role": "user", "content": "hello"}],
                    "options": {"seed": 123, "temperature": 0, "num_ctx": 2048}}
    assert score_with_ollama([ENTRY, ENTRY], "judge", url, quiet=True) == [40, None]
    assert fake.requests[1][2]["model"] == "judge"
    assert fake.requests[1][2]["messages"][0]["content"] == judge_prompt(ENTRY)
    assert "`Blue`" in judge_prompt(ENTRY) and "correct output `Red`" in judge_prompt(ENTRY)
    assert parse_score(" 85.") == 85 and parse_score("150") is None and parse_score("n/a") is None


@pytest.mark.parametrize("answer, error, match", [
    (("raw", b"this is not json\n"), ValueError, "line 1 is not JSON"),
    (("raw", b'{"message": {"role": "assistant"}, "done": true}\n'), ValueError, "no message.content"),
    (("raw", b'{"error": "out of memory"}\n'), ValueError, "out of memory"),
    (("raw", b'{"message": {"content": "5"}, "done": false}\n'), ConnectionError, "ended after 1 lines without"),
    (("drop", None), ConnectionError, "dropped the connection"),
    (("http-error", "model 'llama3' not found"), ValueError, "HTTP 404: model 'llama3' not found"),
])
def test_ollama_bad_answers(ollama, answer, error, match):
    fake, url = ollama
    fake.answers.append(answer)
    with pytest.raises(error, match=match):
        query_ollama("hello", "llama3", url, timeout=10)


def test_ollama_server_down():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"cannot reach Ollama at http://127.0.0.1:{port}"):
        score_with_ollama([ENTRY], url=f"http://127.0.0.1:{port}/api/chat", quiet=True)


# --- end to end --------------------------------------------------------------------------------

TINY = {"vocab_size": 50257, "context_length": 96, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
        "drop_rate": 0.0, "qkv_bias": False}


@pytest.mark.parametrize("lora_rank, mask_prompt", [(None, False), (2, True)])
def test_short_finetune_lowers_loss_and_writes_responses(tmp_path, ollama, lora_rank, mask_prompt):
    data = json.loads(asset_path("instruction-data.json").read_text())[:40]
    path = write(tmp_path, "data.json", json.dumps(data))
    fake, url = ollama
    fake.answers += [("good", ["70"])] * 4
    result = run_instruction_finetune(
        data_path=path, out_dir=tmp_path / "run", model_config=TINY, base_epochs=0,
        num_epochs=2, batch_size=4, lr=1e-2 if lora_rank else 5e-3, eval_freq=3, eval_iter=2,
        max_new_tokens=6, lora_rank=lora_rank, mask_prompt=mask_prompt, ollama_model="judge",
        ollama_url=url, quiet=True)
    losses = result["train_losses"]
    assert len(losses) == 6 and losses[-1] < losses[0]
    saved = json.loads((tmp_path / "run" / "instruction-data-with-response.json").read_text())
    assert [{k: e[k] for k in ("instruction", "input", "output")} for e in saved] == data[34:38]
    assert all(isinstance(e["model_response"], str) and "rouge_l_f1" in e for e in saved)
    assert [e["ollama_score"] for e in saved] == [70] * 4
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())
    assert 0.0 <= scores["offline"]["rouge_l_f1"] <= 1.0 and scores["ollama"]["average"] == 70
    assert (tmp_path / "run" / "loss-plot.png").is_file()
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "lora.safetensors").is_file() == bool(lora_rank)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("instruction-data-with-response.json", "scores.json"):  # as a plain open() makes
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_cli_arguments():
    from tinygpt import cli
    cli._register_commands()
    setup, _ = cli.COMMANDS["finetune-instruct"]
    parser = argparse.ArgumentParser()
    run = setup(parser)
    args = parser.parse_args(["--weights", "gpt2-medium (355M)", "--lora-rank", "16",
                              "--mask-prompt", "--ollama-model", "llama3"])
    assert callable(run) and args.weights == "gpt2-medium (355M)" and args.lora_rank == 16
    assert args.mask_prompt and args.ollama_model == "llama3" and args.batch_size == 8
    assert parser.parse_args([]).ollama_model is None  # the judge is off by default


def test_load_base_model_from_hf_directory_and_checkpoint(tmp_path):
    import tinygpt as tg
    from tinygpt.finetune.instruct import load_base_model
    from tinygpt.model import GPTModel
    from tinygpt.train import save_checkpoint
    from tinygpt.weights import save_pretrained
    tg.manual_seed(0)
    cfg = {**TINY, "qkv_bias": True}
    model = GPTModel(cfg)
    save_pretrained(model, tmp_path / "hf")
    save_checkpoint(tmp_path / "ckpt.safetensors", model, config=cfg)
    for source in (tmp_path / "hf", tmp_path / "ckpt.safetensors"):
        loaded = load_base_model(str(source))
        for (name, a), b in zip(model.named_parameters(), loaded.parameters()):
            np.testing.assert_array_equal(a.data, b.data, err_msg=f"{source}: {name}")
