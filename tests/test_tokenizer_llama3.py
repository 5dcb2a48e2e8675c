"""Llama3Tokenizer and ChatFormat on a tokenizer.model built here (tests/tokenizer_files.py: GPT-2's
ranks padded to Llama 3's 128,000): ordinary text as tiktoken encodes it with Llama 3's pattern,
the special tokens at the ids Meta publishes, and the chat prompt as the book's
`llms_from_scratch.llama3` classes give it and as Llama 3 Instruct spells it."""
import pytest
import tiktoken

from tinygpt.errors import InputError
from tinygpt.tokenizer import ChatFormat, Llama3Tokenizer
from tinygpt.tokenizer.llama3 import LLAMA3_PATTERN, load_tiktoken_ranks
from tokenizer_files import write_llama3_tokenizer_model

TEXTS = ["Hello, world! It's 2024 and I'll say 1234567.", "  spaces\tand\r\nnew lines\n\n  ",
         "unicode: naïve café – 東京 🙂", ""]
# the ids Meta's own tiktoken tokenizer (llama-models, Llama 3.1/3.2) gives its special tokens
META_IDS = {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|start_header_id|>": 128006,
            "<|end_header_id|>": 128007, "<|eom_id|>": 128008, "<|eot_id|>": 128009,
            "<|python_tag|>": 128010, "<|reserved_special_token_2|>": 128011,
            "<|reserved_special_token_246|>": 128255}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return write_llama3_tokenizer_model(tmp_path_factory.mktemp("llama3") / "tokenizer.model")


@pytest.fixture(scope="module")
def tok(model_file):
    return Llama3Tokenizer(model_file)


def test_text_as_tiktoken_encodes_it(model_file, tok):
    enc = tiktoken.Encoding("ref", pat_str=LLAMA3_PATTERN,
                            mergeable_ranks=load_tiktoken_ranks(model_file), special_tokens={})
    for text in TEXTS:
        assert tok.encode(text) == enc.encode(text)
        assert tok.decode(tok.encode(text)) == text
    assert enc.encode("1234567") == [enc.encode("123")[0], enc.encode("456")[0], enc.encode("7")[0]]


def test_special_tokens_at_metas_ids(tok):
    for name, i in META_IDS.items():
        assert tok.special[name] == i
    assert len(tok.special) == 256 and tok.n_words == 128_256
    assert (tok.bos_id, tok.eos_id, tok.eot_id) == (128000, 128001, 128009)
    assert tok.encode("hi", bos=True, eos=True) == [128000] + tok.encode("hi") + [128001]
    assert tok.decode([128006, 128007]) == "<|start_header_id|><|end_header_id|>"


def test_special_tokens_in_text_are_refused_unless_allowed(tok):
    with pytest.raises(InputError, match="special token"):
        tok.encode("a<|eot_id|>b")
    assert tok.encode("a<|eot_id|>b", allowed_special="all") == \
        tok.encode("a") + [128009] + tok.encode("b")


def test_as_the_books_classes(model_file, tok):
    book = pytest.importorskip("llms_from_scratch.llama3")
    theirs = book.Llama3Tokenizer(str(model_file))
    for text in TEXTS:
        for bos in (False, True):
            assert tok.encode(text, bos=bos, eos=not bos) == theirs.encode(text, bos=bos, eos=not bos)
    for name, i in theirs.special.items():
        if "reserved" not in name:  # the book numbers its reserved tokens its own way
            assert tok.special[name] == i
    ours, book_chat = ChatFormat(tok), book.ChatFormat(theirs)
    for text in TEXTS:
        assert ours.encode(text) == book_chat.encode(text)
        assert ours.encode(text, system_message="Be brief.") == \
            book_chat.encode(text, system_message="Be brief.")
    assert ours.decode(ours.encode("x")) == book_chat.decode(book_chat.encode("x"))


def test_chat_prompt_spelled_out(tok):
    ids = ChatFormat(tok, default_system="Be kind.").encode("What is 2+2?")
    assert ids[0] == 128000 and ids.count(128009) == 2
    assert tok.decode(ids) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe kind.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_bad_files_are_named(tmp_path):
    with pytest.raises(InputError, match="no such tokenizer file"):
        Llama3Tokenizer(tmp_path / "tokenizer.model")
    (tmp_path / "bad.model").write_bytes(b"YQ== 0\nnot base64 at all\n")
    with pytest.raises(InputError, match="bad.model, line 2"):
        Llama3Tokenizer(tmp_path / "bad.model")
    (tmp_path / "gap.model").write_bytes(b"YQ== 0\nYg== 2\n")
    with pytest.raises(InputError, match="not 0..1"):
        Llama3Tokenizer(tmp_path / "gap.model")
