"""Gemma3Tokenizer on a tokenizer.json built here the way Gemma's is made (a BPE over "▁"-spaced
text with byte fallback, its special tokens first): ordinary text as Hugging Face's `tokenizers`
encodes it after <bos>, special tokens by their ids wherever they are written, and the chat
template as the book's `apply_chat_template` of ch05/12_gemma3 spells it."""
import pytest

from tinygpt.errors import InputError
from tinygpt.tokenizer import Gemma3Tokenizer
from tinygpt.tokenizer.gemma3 import GEMMA3_SPECIALS
from tokenizer_files import training_text, write_qwen3_tokenizer_json

tokenizers = pytest.importorskip("tokenizers")
TEXTS = ["I HAD always thought Jack Gisburn rather a cheap genius",
         "  two spaces, tabs\tand\nnew lines\n\n", "unicode the BPE never saw: naïve 東京 🙂", ""]


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=600, show_progress=False,
                                  special_tokens=list(GEMMA3_SPECIALS) + ["<unk>"] + bytes_)
    tok.train_from_iterator([training_text()], trainer)
    path = tmp_path_factory.mktemp("gemma3") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def hf(tokenizer_file):
    return tokenizers.Tokenizer.from_file(str(tokenizer_file))


@pytest.mark.parametrize("text", TEXTS)
def test_plain_text_as_tokenizers_encodes_it_after_bos(tokenizer_file, hf, text):
    tok = Gemma3Tokenizer(tokenizer_file, apply_chat_template=False)
    ids = tok.encode(text)
    assert ids == [hf.token_to_id("<bos>")] + hf.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids[1:]) == text
    assert tok.decode(ids) == "<bos>" + text


def test_special_tokens_are_single_ids_anywhere(tokenizer_file, hf):
    tok = Gemma3Tokenizer(tokenizer_file, apply_chat_template=False)
    for name in GEMMA3_SPECIALS:
        assert tok.encode(name) == [hf.token_to_id(name)] and tok.special_tokens[name] < 5
    text = "a<end_of_turn>b<start_of_turn>c"
    assert tok.encode(text) == ([tok.bos_token_id] + hf.encode("a", add_special_tokens=False).ids
                                + [hf.token_to_id("<end_of_turn>")]
                                + hf.encode("b", add_special_tokens=False).ids
                                + [hf.token_to_id("<start_of_turn>")]
                                + hf.encode("c", add_special_tokens=False).ids)


@pytest.mark.parametrize("generation", [True, False])
def test_chat_template_as_the_book_spells_it(tokenizer_file, hf, generation):
    tok = Gemma3Tokenizer(tokenizer_file, add_generation_prompt=generation)
    message = "Give me a short introduction to large language models."
    spelled = (f"<bos><start_of_turn>user\n{message}<end_of_turn>\n"
               + ("<start_of_turn>model\n" if generation else ""))
    assert tok.encode(message) == hf.encode(spelled, add_special_tokens=False).ids
    assert tok.decode(tok.encode(message)) == spelled
    assert tok.encode(message, chat_wrapped=False) == [tok.bos_token_id] + hf.encode(
        message, add_special_tokens=False).ids


def test_end_and_pad_tokens(tokenizer_file, hf, tmp_path):
    chat, base = Gemma3Tokenizer(tokenizer_file), Gemma3Tokenizer(tokenizer_file, apply_chat_template=False)
    assert chat.eos_token_id == hf.token_to_id("<end_of_turn>") != base.eos_token_id == hf.token_to_id("<eos>")
    assert chat.pad_token_id == base.pad_token_id == hf.token_to_id("<pad>")
    with pytest.raises(InputError, match="not a Gemma tokenizer"):
        Gemma3Tokenizer(write_qwen3_tokenizer_json(tmp_path / "tokenizer.json"))


def test_bad_input_is_refused(tokenizer_file, tmp_path):
    tok = Gemma3Tokenizer(tokenizer_file)
    with pytest.raises(InputError, match="takes a str"):
        tok.encode(b"bytes")
    with pytest.raises(InputError, match="no such tokenizer file"):
        Gemma3Tokenizer(tmp_path / "missing.json")
