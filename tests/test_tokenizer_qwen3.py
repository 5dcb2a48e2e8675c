"""Qwen3Tokenizer on a tokenizer.json built here (tests/tokenizer_files.py): ordinary text as
Hugging Face's `tokenizers` encodes it, special tokens by their ids wherever they are written,
and the chat template (thinking on and off) as the book's `llms_from_scratch.qwen3.Qwen3Tokenizer`
gives it and as ChatML spells it."""
import pytest

from tinygpt.errors import InputError
from tinygpt.tokenizer import Qwen3Tokenizer
from tokenizer_files import write_qwen3_tokenizer_json

tokenizers = pytest.importorskip("tokenizers")
TEXTS = ["I HAD always thought Jack Gisburn rather a cheap genius",
         "  two spaces, tabs\tand\nnew lines\n\n", "digits 12345 and unicode: naïve café – 東京 🙂",
         ""]
FLAGS = [(a, g, t) for a in (False, True) for g in (False, True) for t in (False, True)]


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    return write_qwen3_tokenizer_json(tmp_path_factory.mktemp("qwen3") / "tokenizer.json")


@pytest.fixture(scope="module")
def hf(tokenizer_file):
    return tokenizers.Tokenizer.from_file(str(tokenizer_file))


@pytest.mark.parametrize("text", TEXTS)
def test_plain_text_as_tokenizers_encodes_it(tokenizer_file, hf, text):
    tok = Qwen3Tokenizer(tokenizer_file, apply_chat_template=False)
    ids = tok.encode(text)
    assert ids == hf.encode(text).ids
    assert tok.decode(ids) == text
    assert tok.encode(text, chat_wrapped=False) == ids


def test_special_tokens_are_single_ids_anywhere(tokenizer_file, hf):
    tok = Qwen3Tokenizer(tokenizer_file, apply_chat_template=False)
    for name in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"):
        assert tok.encode(name) == [hf.token_to_id(name)]
        assert tok.special_tokens[name] == hf.token_to_id(name) >= 300  # after the BPE's ranks
    text = "a<think>b</think>c<|im_end|>d"
    ids = tok.encode(text)
    assert ids == (hf.encode("a").ids + [hf.token_to_id("<think>")] + hf.encode("b").ids
                   + [hf.token_to_id("</think>")] + hf.encode("c").ids
                   + [hf.token_to_id("<|im_end|>")] + hf.encode("d").ids)
    assert tok.decode(ids) == text


@pytest.mark.parametrize("apply, generation, thinking", FLAGS)
def test_chat_template_as_the_books(tokenizer_file, apply, generation, thinking):
    book = pytest.importorskip("llms_from_scratch.qwen3")
    flags = dict(apply_chat_template=apply, add_generation_prompt=generation, add_thinking=thinking)
    ours = Qwen3Tokenizer(tokenizer_file, **flags)
    theirs = book.Qwen3Tokenizer(tokenizer_file_path=str(tokenizer_file), **flags)
    for text in TEXTS[:3] + ["Give me a short introduction to large language models."]:
        assert ours.encode(text) == theirs.encode(text)
        for wrapped in (False, True):
            assert ours.encode(text, chat_wrapped=wrapped) == theirs.encode(text, chat_wrapped=wrapped)
    assert (ours.eos_token_id, ours.pad_token_id) == (
        (theirs._special_to_id["<|im_end|>"] if apply else theirs.eos_token_id), theirs.pad_token_id)


def test_chat_template_spelled_out(tokenizer_file, hf):
    think_off = Qwen3Tokenizer(tokenizer_file, add_generation_prompt=True, add_thinking=False)
    think_on = Qwen3Tokenizer(tokenizer_file, add_generation_prompt=True, add_thinking=True)
    no_prompt = Qwen3Tokenizer(tokenizer_file)
    user = "<|im_start|>user\nHi there<|im_end|>\n"
    assert think_off.decode(think_off.encode("Hi there")) == \
        user + "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert think_on.decode(think_on.encode("Hi there")) == user + "<|im_start|>assistant\n"
    assert no_prompt.decode(no_prompt.encode("Hi there")) == user
    assert no_prompt.encode("Hi there")[0] == hf.token_to_id("<|im_start|>")


def test_end_and_pad_tokens(tokenizer_file, hf):
    im_end, eot = hf.token_to_id("<|im_end|>"), hf.token_to_id("<|endoftext|>")
    assert Qwen3Tokenizer(tokenizer_file).eos_token_id == im_end
    assert Qwen3Tokenizer(tokenizer_file, apply_chat_template=False).eos_token_id == eot
    assert Qwen3Tokenizer(tokenizer_file, repo_id="Qwen/Qwen3-0.6B").eos_token_id == im_end
    assert Qwen3Tokenizer(tokenizer_file, repo_id="Qwen/Qwen3-0.6B-Base").eos_token_id == eot
    assert Qwen3Tokenizer(tokenizer_file).pad_token_id == eot
    book = pytest.importorskip("llms_from_scratch.qwen3")
    for repo in ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B-Base"):
        theirs = book.Qwen3Tokenizer(tokenizer_file_path=str(tokenizer_file), repo_id=repo)
        assert Qwen3Tokenizer(tokenizer_file, repo_id=repo).eos_token_id == theirs.eos_token_id


def test_bad_files_are_named(tmp_path, tokenizer_file):
    with pytest.raises(InputError, match="no such tokenizer file"):
        Qwen3Tokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        Qwen3Tokenizer(tmp_path / "bad.json")
    tok = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    plain = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={"a": 0}, merges=[]))
    plain.save(str(tmp_path / "plain.json"))
    with pytest.raises(InputError, match="no <\\|endoftext\\|> token"):
        Qwen3Tokenizer(tmp_path / "plain.json")
    with pytest.raises(InputError, match="takes a str"):
        Qwen3Tokenizer(tokenizer_file).encode(tok.encode("a").ids)
