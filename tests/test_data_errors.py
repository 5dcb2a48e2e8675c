"""The data loaders on files a user might hand them: each problem is one InputError that names
the file (and the byte, line, row or entry) and says what is wrong; nothing else escapes."""
import json
import os

import pytest

from tinygpt.data.instruct import InstructionDataset, MalformedEntryError, load_instruction_data
from tinygpt.data.spam import SpamDataset, prepare_spam_csvs, read_messages, write_csv
from tinygpt.errors import InputError
from tinygpt.tokenizer import get_gpt2_tokenizer


@pytest.fixture(scope="module")
def tok():
    return get_gpt2_tokenizer()


@pytest.mark.parametrize("name, read", [("sms.tsv", read_messages), ("rows.csv", read_messages),
                                        ("data.json", load_instruction_data)])
def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path, name, read):
    body = {"sms.tsv": b"ham\tfine\nspam\twin \xe9 now\n", "rows.csv": b"Label,Text\n0,ok\n1,caf\xe9\n",
            "data.json": b'[{"instruction": "a",\n "output": "caf\xe9"}]'}[name]
    (tmp_path / name).write_bytes(body)
    at, line = body.index(bytes([0xE9])), {"sms.tsv": 2, "rows.csv": 3, "data.json": 2}[name]
    with pytest.raises(InputError, match=rf"{name} is not UTF-8 text: byte {at} \(line {line}\)"):
        read(tmp_path / name)


def test_a_byte_order_mark_is_not_part_of_the_first_label(tmp_path):
    (tmp_path / "bom.tsv").write_bytes("\ufeffham\thello\nspam\tWIN now\n".encode())
    assert read_messages(tmp_path / "bom.tsv") == [(0, "hello"), (1, "WIN now")]
    (tmp_path / "bom.csv").write_bytes("\ufeffLabel,Text\n1,WIN\n".encode())
    assert read_messages(tmp_path / "bom.csv") == [(1, "WIN")]
    (tmp_path / "bom.json").write_bytes("\ufeff".encode() + b'[{"instruction": "a", "output": "b"}]')
    assert load_instruction_data(tmp_path / "bom.json")[0]["output"] == "b"


@pytest.mark.parametrize("text, problem", [
    ("[" * 100_000, "RecursionError"),
    ('[{"instruction": "a", "output": "b", "n": ' + "9" * 5000 + "}]", "ValueError"),
])
def test_json_that_breaks_the_parser_names_the_file(tmp_path, text, problem):
    (tmp_path / "data.json").write_text(text)
    with pytest.raises(InputError, match=rf"data\.json: not usable JSON \({problem}"):
        load_instruction_data(tmp_path / "data.json")


def test_a_json_line_that_breaks_the_parser_names_the_line(tmp_path):
    good = json.dumps({"instruction": "a", "output": "b"})
    (tmp_path / "data.jsonl").write_text(good + "\n" + good + "\n" + "[" * 100_000 + "\n")
    with pytest.raises(MalformedEntryError, match=r"data\.jsonl: entry 2 \(line 3\) is malformed: "
                                                  r"RecursionError"):
        load_instruction_data(tmp_path / "data.jsonl")


def test_endoftext_in_a_message_names_the_row(tmp_path, tok):
    (tmp_path / "sms.tsv").write_text("ham\tfine\nspam\tcall <|endoftext|> now\n")
    with pytest.raises(InputError) as info:
        SpamDataset(tmp_path / "sms.tsv", tok)
    message = str(info.value)
    assert "\n" not in message and "sms.tsv, message 1" in message and "<|endoftext|>" in message
    with pytest.raises(InputError, match=r"^message 0 \('<\|endoftext\|>'\) cannot be tokenized"):
        SpamDataset([("spam", "<|endoftext|>")], tok)


def test_endoftext_in_an_instruction_names_the_entry(tok):
    data = [{"instruction": "ok", "input": "", "output": "fine"},
            {"instruction": "Say", "input": "", "output": "bye <|endoftext|>"}]
    with pytest.raises(InputError, match=r"^instruction entry 1 \('Say'\) cannot be tokenized: "
                                         r"[^\n]*'<\|endoftext\|>'[^\n]*$"):
        InstructionDataset(data, tok)


def test_a_collection_without_spam_names_the_file_not_an_intermediate_csv(tmp_path):
    (tmp_path / "ham.tsv").write_text("ham\thello\nham\tsee you\n")
    with pytest.raises(InputError) as info:
        prepare_spam_csvs(tmp_path / "out", source=tmp_path / "ham.tsv")
    assert "ham.tsv: cannot balance 2 ham and 0 spam" in str(info.value)
    assert "train.csv" not in str(info.value) and not (tmp_path / "out").exists()


def test_write_csv_is_atomic_with_the_umask_mode(tmp_path):
    path = write_csv([("spam", "WIN, now"), (0, 'say "hi"')], tmp_path / "t.csv")
    assert read_messages(path) == [(1, "WIN, now"), (0, 'say "hi"')]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]
