"""Tokenizers of book ch. 2: the simple regex tokenizers, GPT-2 via tiktoken (offline), and the readable
BPETokenizer, which must give exactly tiktoken's ids for any text."""
import hashlib
import pathlib
import shutil
import socket

import pytest
import regex
import tiktoken
import tiktoken.load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinygpt
from tinygpt.errors import InputIndexError
from tinygpt.assets import ASSETS_DIR, asset_path
from tinygpt.tokenizer import (
    ENDOFTEXT,
    BPETokenizer,
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    build_vocab,
    get_gpt2_tokenizer,
    load_gpt2_ranks,
    simple_split,
    split_words,
)
from tinygpt.tokenizer import gpt2 as gpt2_module
from tinygpt.tokenizer.pretokenize import SPLIT_REGEX, UNICODE_17_LETTERS_AND_NUMBERS

# the example text and its GPT-2 ids as printed in the book, section 2.5
BOOK_TEXT = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
BOOK_IDS = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286, 617,
            34680, 27271, 13]
PACKAGE = pathlib.Path(tinygpt.__file__).resolve().parent  # the package under test, source or installed


@pytest.fixture(scope="module")
def verdict():
    return asset_path("the-verdict.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tik():
    return get_gpt2_tokenizer()


# One shared instance: its per-word cache keeps the hypothesis tests fast.
BPE = BPETokenizer.gpt2()


# ---- shipped data ------------------------------------------------------------------------------------

def test_assets_are_the_documented_files():
    sources = (ASSETS_DIR / "SOURCES.md").read_text()
    for name in ("gpt2.tiktoken", "the-verdict.txt"):
        digest = hashlib.sha256(asset_path(name).read_bytes()).hexdigest()
        assert digest in sources, f"{name}: sha256 {digest} is not the one in assets/SOURCES.md"


def test_asset_path_missing_file_names_file_and_folder():
    with pytest.raises(FileNotFoundError, match=r"'nope\.txt'.*assets"):
        asset_path("nope.txt")
    with pytest.raises(ValueError, match="plain file name"):
        asset_path("../tokenizer/gpt2.py")


def test_package_never_reads_the_shared_folder():
    for sub in ("tokenizer", "data", "assets"):
        for path in (PACKAGE / sub).glob("*.py"):
            text = path.read_text()
            assert "work/shared" not in text and "shared/data" not in text, f"{path} refers to the shared folder"


# ---- the simple tokenizers (ch. 2.3-2.4) -----------------------------------------------------------

def test_simple_vocab_sizes_match_the_book(verdict):
    # the book's counts: 4,690 tokens and 1,130 words (section 2.3), 1,132 with the two special
    # tokens (section 2.4)
    assert len(simple_split(verdict)) == 4690
    assert len(build_vocab(verdict)) == 1130
    vocab = build_vocab(verdict, [ENDOFTEXT, "<|unk|>"])
    assert len(vocab) == 1132
    assert vocab[ENDOFTEXT] == 1130 and vocab["<|unk|>"] == 1131


def test_simple_v1_book_example(verdict):
    tok = SimpleTokenizerV1(build_vocab(verdict))
    text = """"It's the last he painted, you know," Mrs. Gisburn said with pardonable pride."""
    ids = tok.encode(text)
    assert ids == [1, 56, 2, 850, 988, 602, 533, 746, 5, 1126, 596, 5, 1, 67, 7, 38, 851, 1108, 754, 793, 7]
    assert tok.decode(ids) == '" It\' s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
    # decode normalises spacing, so the round trip is on ids: encode(decode(ids)) == ids
    all_ids = tok.encode(verdict)
    assert tok.encode(tok.decode(all_ids)) == all_ids


def test_simple_v1_unknown_word_is_a_keyerror_naming_it(verdict):
    tok = SimpleTokenizerV1(build_vocab(verdict))
    with pytest.raises(KeyError) as info:
        tok.encode("Hello, do you like tea?")
    assert "'Hello' is not in the vocabulary" in str(info.value)
    with pytest.raises(InputIndexError, match="token id 5000 is outside the vocabulary of 1130 ids"):
        tok.decode([5000])


def test_simple_v2_unknown_and_endoftext(verdict):
    tok = SimpleTokenizerV2(build_vocab(verdict, [ENDOFTEXT, "<|unk|>"]))
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace."
    ids = tok.encode(text)  # the ids and decoded text the book prints in section 2.4
    assert ids == [1131, 5, 355, 1126, 628, 975, 10, 1130, 55, 988, 956, 984, 722, 988, 1131, 7]
    assert tok.decode(ids) == "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>."
    with pytest.raises(ValueError, match="<|unk|>"):
        SimpleTokenizerV2(build_vocab(verdict))


# ---- GPT-2 via tiktoken, offline (ch. 2.5) ----------------------------------------------------------

@pytest.mark.parametrize("make", [get_gpt2_tokenizer, BPETokenizer.gpt2], ids=["tiktoken", "bpe"])
def test_book_example_ids(make):
    tok = make()
    ids = tok.encode(BOOK_TEXT, allowed_special={ENDOFTEXT})
    assert ids == BOOK_IDS
    assert tok.decode(ids) == BOOK_TEXT
    assert tok.n_vocab == 50257


def test_the_verdict_has_5145_gpt2_tokens(verdict, tik):
    # the book's count, section 2.6
    ids = tik.encode(verdict)
    assert len(ids) == 5145
    assert BPE.encode(verdict) == ids
    assert tik.decode(ids) == verdict


def test_gpt2_tokenizer_is_cached_and_never_touches_the_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the tokenizer tried to use the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(tiktoken, "get_encoding", no_network)  # the book's downloading entry point
    for name in ("read_file", "read_file_cached", "load_tiktoken_bpe"):  # tiktoken's loaders: never needed
        monkeypatch.setattr(tiktoken.load, name, no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/nonexistent-tinygpt-test")
    get_gpt2_tokenizer.cache_clear()
    gpt2_module._gpt2_ranks.cache_clear()
    try:
        tok = get_gpt2_tokenizer()
        assert tok is get_gpt2_tokenizer()
        assert isinstance(tok, tiktoken.Encoding)
        assert tok.encode(BOOK_TEXT, allowed_special="all") == BOOK_IDS
        assert BPETokenizer.gpt2().encode(BOOK_TEXT, allowed_special="all") == BOOK_IDS
    finally:
        get_gpt2_tokenizer.cache_clear()
        gpt2_module._gpt2_ranks.cache_clear()


def test_ranks_file_loads_completely():
    ranks = load_gpt2_ranks()
    assert len(ranks) == 50256
    assert sorted(ranks.values()) == list(range(50256))
    assert ranks[b"Hello"] == 15496 and ranks[b" the"] == 262


def test_corrupted_ranks_file_names_file_and_both_hashes(tmp_path):
    bad = tmp_path / "gpt2.tiktoken"
    shutil.copy(asset_path("gpt2.tiktoken"), bad)
    data = bytearray(bad.read_bytes())
    data[1000] ^= 0x01
    bad.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ValueError) as info:
        load_gpt2_ranks(bad)
    message = str(info.value)
    assert str(bad) in message
    assert actual in message and gpt2_module.GPT2_RANKS_SHA256 in message


# ---- encoding errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [get_gpt2_tokenizer, BPETokenizer.gpt2], ids=["tiktoken", "bpe"])
def test_bytes_are_not_text(make):
    tok = make()
    for data in (b"hello", bytearray(b"hello")):
        with pytest.raises(TypeError, match=r"expected text \(str\), got (bytes|bytearray); decode it"):
            tok.encode(data)
        with pytest.raises(TypeError, match="expected text"):
            tok.encode_ordinary(data)
    with pytest.raises(TypeError, match="got int"):
        tok.encode(42)


@pytest.mark.parametrize("make", [get_gpt2_tokenizer, BPETokenizer.gpt2], ids=["tiktoken", "bpe"])
def test_lone_surrogates_are_not_text(make):
    tok = make()
    with pytest.raises(ValueError, match=r"U\+D800 at index 3"):
        tok.encode("abc\ud800def")
    with pytest.raises(ValueError, match=r"U\+DCFF at index 0"):
        tok.encode_ordinary(b"\xff".decode("utf-8", errors="surrogateescape"))


@pytest.mark.parametrize("make", [get_gpt2_tokenizer, BPETokenizer.gpt2], ids=["tiktoken", "bpe"])
def test_disallowed_special_token_raises_naming_it(make):
    tok = make()
    with pytest.raises(ValueError, match=r"'<\|endoftext\|>'"):
        tok.encode("a <|endoftext|> b")
    with pytest.raises(ValueError, match=r"'<\|endoftext\|>'"):
        tok.encode("a <|endoftext|> b", allowed_special=set())
    assert tok.encode("a <|endoftext|>", allowed_special="all")[-1] == 50256
    # neither allowed nor disallowed: plain text
    assert tok.encode("<|endoftext|>", disallowed_special=()) == [27, 91, 437, 1659, 5239, 91, 29]


def test_bpe_rejects_misspelt_special_arguments():
    with pytest.raises(TypeError, match="set of strings"):
        BPE.encode("x", allowed_special="<|endoftext|>")
    with pytest.raises(ValueError, match="unknown special tokens"):
        BPE.encode("x", allowed_special={"<|endoftxt|>"})
    with pytest.raises(InputIndexError, match="token id 50257 is outside the vocabulary of 50257 ids"):
        BPE.decode([50257])


def test_decode_cut_inside_a_character_matches_tiktoken(tik):
    ids = tik.encode("naïve 🤖")
    for k in range(len(ids) + 1):
        assert BPE.decode(ids[:k]) == tik.decode(ids[:k])


# ---- BPETokenizer == tiktoken, for any text ----------------------------------------------------------

def test_pretokenizer_character_classes_match_tiktoken():
    """Is each code point a letter / number for our split exactly when it is for tiktoken's regex?
    (Guards the Unicode-version correction in pretokenize.py against upgrades of either library.)"""
    byte_ranks = {bytes([b]): b for b in range(256)}
    everything = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)

    def tiktoken_class(pattern):  # tiktoken keeps only the matches: the characters of that class
        enc = tiktoken.Encoding(f"probe{pattern}", pat_str=pattern, mergeable_ranks=byte_ranks, special_tokens={})
        return set(bytes(enc.encode_ordinary(everything)).decode("utf-8"))

    table = {chr(c) for a, b in UNICODE_17_LETTERS_AND_NUMBERS for c in range(a, b + 1)}
    for name, prefix, pattern in (("letter", "a", r"\p{L}"), ("number", "1", r"\p{N}")):
        theirs = tiktoken_class(pattern)
        plain = set(regex.findall(pattern, everything))  # the regex module's own (newer) tables
        # Check our split where the libraries disagree, on the exclusion table, and on every 7th code point
        # ("a" + c is one piece iff c is a letter, "1" + c iff c is a number).
        suspects = (plain ^ theirs) | table | set(everything[::7])
        ours = {c for c in suspects if len(SPLIT_REGEX.findall(prefix + c)) == 1}
        wrong = sorted(ord(c) for c in ours ^ (suspects & theirs))
        assert not wrong, f"{name} class differs from tiktoken at {len(wrong)} code points, e.g. {wrong[:10]}"
    assert "\U000323b0" in table and len(table) == 4657


WHITESPACE = " \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2028\u2029\u202f\u3000"
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'", "’s", "don", "it", "we", " "]
EMOJI = ["🤖", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "🙂", "✨", "🧑🏿‍🚀", "\u200d", "\ufe0f"]
NEW_IN_UNICODE_17 = [chr(a) for a, _ in UNICODE_17_LETTERS_AND_NUMBERS] + ["\U00033479"]
WORDS = ["hello", " world", "Hello", "tea", "?", ".", ",", "--", "\n\n", "  ", "1234", "3.14", "naïve",
         "日本語", "Привет", "١٢٣", "x²", ENDOFTEXT, "<|endoftext", "|>", "<|", "<|endoftext|><|endoftext|>"]

whitespace_runs = st.text(alphabet=WHITESPACE + "ab1!", max_size=40)
digits = st.text(alphabet="0123456789 .,-+٠١٢٣४५½²Ⅻ①a", max_size=40)
contractions = st.lists(st.sampled_from(CONTRACTIONS + ["a", "A", "1", "\n"]), max_size=20).map("".join)
emoji = st.lists(st.sampled_from(EMOJI + ["a", " ", "1", "!"]), max_size=20).map("".join)
specials = st.lists(st.sampled_from(WORDS), max_size=20).map("".join)
unicode17 = st.lists(st.sampled_from(NEW_IN_UNICODE_17 + ["a", " ", "1", "!", "é"]), max_size=15).map("".join)
pieces = st.sampled_from(WORDS + CONTRACTIONS + EMOJI + NEW_IN_UNICODE_17 + list(WHITESPACE))
mixed = st.lists(st.one_of(pieces, st.text(max_size=8)), max_size=25).map("".join)
TARGETED = st.one_of(whitespace_runs, digits, contractions, emoji, specials, unicode17, mixed)


def assert_same_as_tiktoken(text):
    tik = get_gpt2_tokenizer()
    assert BPE.encode_ordinary(text) == tik.encode_ordinary(text), repr(text)
    assert BPE.encode(text, allowed_special="all") == tik.encode(text, allowed_special="all"), repr(text)
    assert BPE.encode(text, disallowed_special=()) == tik.encode(text, disallowed_special=()), repr(text)
    ids = BPE.encode(text, allowed_special="all")
    assert BPE.decode(ids) == text


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_bpe_matches_tiktoken_on_arbitrary_unicode(text):
    assert_same_as_tiktoken(text)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TARGETED)
def test_bpe_matches_tiktoken_on_targeted_text(text):
    assert_same_as_tiktoken(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100))
def test_split_words_covers_the_text(text):
    words = split_words(text)
    assert "".join(words) == text
    assert words == SPLIT_REGEX.findall(text)  # the fast path for common text agrees with the exact pattern


def test_bpe_matches_tiktoken_on_long_runs(verdict):
    for text in ("a" * 3000, " " * 2000 + "x", "🤖" * 500, "1" * 1001, verdict[:5000] * 3, "\n" * 300 + "  "):
        assert_same_as_tiktoken(text)


# ---- training (bonus material of ch. 2) ---------------------------------------------------------------

CORPUS = (
    "the cat sat on the mat. the cat ate the rat. <|endoftext|> "
    "a rat and a cat sat on a mat; the mat was flat and the cat was fat. " * 3
)


def test_train_learns_merges_that_shorten_the_text():
    tok = BPETokenizer.train(CORPUS, vocab_size=270, special_tokens=[ENDOFTEXT])
    assert tok.n_vocab == 270
    assert tok.special_tokens == {ENDOFTEXT: 269}
    # the most frequent pairs are merged first: "at" (cat, sat, mat, rat, ...), then "th", "the", " the"
    assert [tok.decoder[i] for i in range(256, 260)] == [b"at", b"th", b"the", b" the"]
    assert tok.encode_ordinary(" the cat") == [tok.ranks[b" the"], tok.ranks[b" cat"]]
    n_bytes = len(CORPUS.encode("utf-8"))
    ids = tok.encode(CORPUS, allowed_special="all")
    assert len(ids) < n_bytes / 2, (len(ids), n_bytes)
    assert tok.decode(ids) == CORPUS
    untrained = BPETokenizer({bytes([b]): b for b in range(256)}, {ENDOFTEXT: 256})
    assert len(untrained.encode(CORPUS, allowed_special="all")) > 2 * len(ids)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_trained_tokenizer_round_trips_any_text(text):
    assert TRAINED.decode(TRAINED.encode(text, allowed_special="all")) == text


TRAINED = BPETokenizer.train(CORPUS, vocab_size=300)


def test_train_is_deterministic_and_stops_when_nothing_repeats():
    a = BPETokenizer.train(CORPUS, vocab_size=280)
    b = BPETokenizer.train(CORPUS, vocab_size=280)
    assert a.ranks == b.ranks
    assert BPETokenizer.train(CORPUS, vocab_size=1000).n_vocab == 283  # stops: no pair occurs twice any more
    small = BPETokenizer.train("abcdef", vocab_size=1000, special_tokens=[])
    assert small.n_vocab == 256
    with pytest.raises(ValueError, match="vocab_size must be"):
        BPETokenizer.train(CORPUS, vocab_size=100)
