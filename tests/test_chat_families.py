"""`tinygpt chat` and `tinygpt generate` on Gemma 3, Olmo 3 and Qwen3 MoE folders, in a
subprocess, as a user runs them: a tiny random transformers model saved with save_pretrained
beside a tokenizer.json built here for its family. The prompt ids the CLI must use are the
`tokenizers` library's encoding of the family's chat template spelled out by hand, and the reply
must be transformers' own greedy `generate` from them, cut at the family's end token (the head
is arranged so that the chat reply says a few tokens and then that end token); the server's
engine gives the same tokens. Then Olmo3Tokenizer against the `tokenizers` library on the same
tokenizer.json (fixed and drawn text, round trips, the chat template), and a vocabulary larger
than its tokenizer (as Qwen3's is): no undecodable id is ever generated or served."""
import subprocess
import sys

import pytest

from tokenizer_files import training_text, write_qwen3_tokenizer_json

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

MESSAGE, PLAIN, MAX_NEW = "Tell me a story.", "Once upon", 12
OLMO3_SPECIALS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                  "<|im_start|>", "<|im_end|>", "<|pad|>"]
# the word splitting of cl100k, which Olmo 3's tokenizer.json puts before its byte-level BPE
CL100K = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
OLMO3_SYSTEM = ("You are a helpful function-calling AI assistant. You do not currently have "
                "access to any functions. <functions></functions>")


def write_olmo3_tokenizer_json(path, vocab_size: int = 400):
    """A byte-level BPE shaped as Olmo 3's (cl100k's split regex, then GPT-2's byte alphabet),
    with Olmo 3's special tokens after its ranks."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CL100K), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([training_text()], trainer)
    tok.add_special_tokens(OLMO3_SPECIALS)
    tok.save(str(path))
    return path


def write_gemma3_tokenizer_json(path):
    """A BPE over "▁"-spaced text with byte fallback, Gemma's special tokens first (as
    test_tokenizer_gemma3.py builds it)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from tinygpt.tokenizer.gemma3 import GEMMA3_SPECIALS
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    trainer = trainers.BpeTrainer(vocab_size=600, show_progress=False, special_tokens=list(
        GEMMA3_SPECIALS) + ["<unk>"] + [f"<0x{b:02X}>" for b in range(256)])
    tok.train_from_iterator([training_text()], trainer)
    tok.save(str(path))
    return path


def gemma3(vocab):
    config = transformers.Gemma3TextConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=7,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
        sliding_window=4, query_pre_attn_scalar=8, tie_word_embeddings=False, pad_token_id=0)
    return transformers.Gemma3ForCausalLM(config)


def olmo3(vocab):
    config = transformers.Olmo3Config(
        vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        sliding_window=4, pad_token_id=0, bos_token_id=None, eos_token_id=None)
    return transformers.Olmo3ForCausalLM(config)


def qwen3_moe(vocab):
    config = transformers.Qwen3MoeConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
        num_experts=8, num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=128, norm_topk_prob=True,
        tie_word_embeddings=False)
    return transformers.Qwen3MoeForCausalLM(config)


# family -> (tokenizer writer, model maker, chat prompt spelled out, plain prompt spelled out,
#            end tokens of a chat, end tokens of plain text, the chat banner's words)
FAMILIES = {
    "gemma3": (write_gemma3_tokenizer_json, gemma3,
               f"<bos><start_of_turn>user\n{MESSAGE}<end_of_turn>\n<start_of_turn>model\n",
               f"<bos>{PLAIN}", ["<end_of_turn>", "<eos>"], ["<eos>"], "Gemma 3's chat template"),
    "olmo3": (write_olmo3_tokenizer_json, olmo3,
              f"<|im_start|>system\n{OLMO3_SYSTEM}<|im_end|>\n<|im_start|>user\n{MESSAGE}"
              "<|im_end|>\n<|im_start|>assistant\n", PLAIN, ["<|im_end|>", "<|endoftext|>"],
              ["<|endoftext|>"], "Olmo 3's chat template"),
    "qwen3_moe": (write_qwen3_tokenizer_json, qwen3_moe,
                  f"<|im_start|>user\n{MESSAGE}<|im_end|>\n<|im_start|>assistant\n<think>\n\n"
                  "</think>\n\n", PLAIN, ["<|im_end|>", "<|endoftext|>"], ["<|endoftext|>"],
                  "Qwen3's chat template, thinking off"),
}


def hf_greedy(model, ids, stops):
    """transformers' greedy generate after `ids`, cut before the first of `stops`."""
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_NEW, do_sample=False,
                             eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
    cut = [out.index(s) for s in stops if s in out]
    return out[:min(cut)] if cut else out, bool(cut)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(name, folder, `tokenizers` Tokenizer, chat reply ids, plain continuation ids)."""
    name = request.param
    write_tokenizer, make_model, chat_text, plain_text, chat_stops, plain_stops, _ = FAMILIES[name]
    folder = tmp_path_factory.mktemp(name)
    hf = tokenizers.Tokenizer.from_file(str(write_tokenizer(folder / "tokenizer.json")))
    torch.manual_seed(0)
    model = make_model(hf.get_vocab_size(with_added_tokens=True)).eval()
    chat_ids = hf.encode(chat_text, add_special_tokens=False).ids
    chat_stops = [hf.token_to_id(t) for t in chat_stops]
    plain_stops = [hf.token_to_id(t) for t in plain_stops]
    tokens, _ = hf_greedy(model, chat_ids, [])
    # swap the head rows of the chat's end token and the first token new at its step (past the
    # first two, no end token before it): greedy decoding then says the tokens before it and
    # then the end token
    stop = next(k for k in range(2, MAX_NEW) if tokens[k] not in tokens[:k] + chat_ids
                and not set(tokens[:k + 1]) & set(chat_stops))
    with torch.no_grad():
        head = model.lm_head.weight
        head[[tokens[stop], chat_stops[0]]] = head[[chat_stops[0], tokens[stop]]]
    reply, stopped = hf_greedy(model, chat_ids, chat_stops)
    assert stopped and reply == tokens[:stop]
    plain, _ = hf_greedy(model, hf.encode(plain_text, add_special_tokens=False).ids, plain_stops)
    model.save_pretrained(folder)
    return name, folder, hf, reply, plain


def test_chat_uses_the_familys_template_and_stops_at_its_end_token(family):
    name, folder, hf, reply, _ = family
    out = subprocess.run([sys.executable, "-m", "tinygpt", "chat", "--model", str(folder),
                          "--max-new-tokens", str(MAX_NEW)], input=f"{MESSAGE}\n/exit\n",
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    lines = out.stdout.split("\n")   # not splitlines: a reply may hold \x0c or \x1c, which it splits at
    assert FAMILIES[name][-1] in lines[0]
    replies = [line for line in lines if line.startswith("model> ")]
    assert replies == ["model> " + hf.decode(reply, skip_special_tokens=False)]


def test_generate_continues_plain_text_with_the_familys_tokenizer(family):
    _, folder, hf, _, plain = family
    out = subprocess.run([sys.executable, "-m", "tinygpt", "generate", "--model", str(folder),
                          "--prompt", PLAIN, "--max-new-tokens", str(MAX_NEW)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert out.stdout.rstrip("\n") == PLAIN + hf.decode(plain, skip_special_tokens=False)


def test_the_server_engine_answers_a_chat_and_continues_plain_text_alike(family):
    """`tinygpt serve`'s Engine on the same folder (in process): the chat reply and the plain
    continuation are the same greedy tokens; the server holds the chat model, so a plain
    continuation stops at the chat's end tokens too."""
    from tinygpt.cli.models import load_text_model
    from tinygpt.serve import Engine, Settings
    name, folder, hf, reply, plain = family
    stops = [i for i, t in enumerate(plain) if hf.id_to_token(t) in FAMILIES[name][4]]
    plain = plain[:stops[0]] if stops else plain
    engine = Engine(load_text_model(folder, chat=True), name)
    for text, chat, want in ((MESSAGE, True, reply), (PLAIN, False, plain)):
        with engine.turn():
            got = list(engine.tokens(engine.prompt_ids(text, chat), Settings(
                prompt=text, chat=chat, max_tokens=MAX_NEW, temperature=0.0)))
        assert got == want, (name, chat)


# ---- Olmo3Tokenizer against `tokenizers` on the same tokenizer.json ----------------------------
OLMO3_TEXTS = ["I HAD always thought Jack Gisburn rather a cheap genius",
               "  two spaces, tabs\tand\nnew lines\n\n", "unicode the BPE never saw: naïve 東京 🙂",
               "numbers 1234567, it's THEY'LL 'd", "a<|im_end|>b<|im_start|>c<|endoftext|>d",
               "almost special: <|im_end| <|pad", ""]


@pytest.fixture(scope="module")
def olmo3_file(tmp_path_factory):
    return write_olmo3_tokenizer_json(tmp_path_factory.mktemp("olmo3-tokenizer") / "tokenizer.json")


def check_olmo3_text(path, text):
    from tinygpt.tokenizer import Olmo3Tokenizer
    tok = Olmo3Tokenizer(path, apply_chat_template=False)
    ids = tok.encode(text)
    assert ids == tokenizers.Tokenizer.from_file(str(path)).encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == text


@pytest.mark.parametrize("text", OLMO3_TEXTS)
def test_olmo3_tokenizer_encodes_as_tokenizers_does_and_round_trips(olmo3_file, text):
    check_olmo3_text(olmo3_file, text)


def test_olmo3_tokenizer_on_drawn_text(olmo3_file):
    from hypothesis import given, settings, strategies as st
    alphabet = st.characters(blacklist_categories=("Cs",))   # no lone surrogates (not text)
    pieces = st.lists(st.one_of(st.text(alphabet, max_size=12), st.sampled_from(
        OLMO3_SPECIALS + [" ", "\n", "'s", "123456"])), max_size=6).map("".join)

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(pieces)
    def check(text):
        if text.strip() not in OLMO3_SPECIALS:   # a special token alone is its id, spaces dropped
            check_olmo3_text(olmo3_file, text)
    check()


def test_olmo3_chat_template_end_tokens_and_refusals(olmo3_file, tmp_path):
    from tinygpt.errors import InputError
    from tinygpt.tokenizer import Olmo3Tokenizer
    hf = tokenizers.Tokenizer.from_file(str(olmo3_file))
    chat, base = Olmo3Tokenizer(olmo3_file), Olmo3Tokenizer(olmo3_file, apply_chat_template=False)
    spelled = FAMILIES["olmo3"][2]
    assert chat.encode(MESSAGE) == hf.encode(spelled, add_special_tokens=False).ids
    assert chat.decode(chat.encode(MESSAGE)) == spelled
    assert chat.encode(MESSAGE, chat_wrapped=False) == base.encode(MESSAGE)
    assert chat.eos_token_id == hf.token_to_id("<|im_end|>")
    assert base.eos_token_id == chat.endoftext_id == hf.token_to_id("<|endoftext|>")
    assert chat.pad_token_id == hf.token_to_id("<|pad|>")
    assert chat.special_tokens == {t: hf.token_to_id(t) for t in OLMO3_SPECIALS}
    with pytest.raises(InputError, match="not an Olmo 3"):
        Olmo3Tokenizer(write_gemma3_tokenizer_json(tmp_path / "tokenizer.json"))


# ---- a vocabulary larger than the tokenizer (Qwen3: 151,936 rows, 151,669 ids) ----------------
def test_ids_beyond_the_tokenizer_are_never_generated_or_served(tmp_path):
    """A tiny Qwen3 with 24 rows past its tokenizer, their head rows favoured so that unmasked
    decoding picks them: `tinygpt generate` gives the greedy tokens of the same model cut to the
    tokenizer's rows, and the server's sampling never draws an undecodable id."""
    import numpy as np
    from modern_models import TINY_QWEN3
    from tinygpt import generate, manual_seed
    from tinygpt.cli.models import load_text_model
    from tinygpt.model import Qwen3Model
    from tinygpt.serve import Engine, Settings
    from tinygpt.weights import save_pretrained_hf
    hf = tokenizers.Tokenizer.from_file(str(write_qwen3_tokenizer_json(tmp_path / "tokenizer.json")))
    n, endoftext = hf.get_vocab_size(with_added_tokens=True), hf.token_to_id("<|endoftext|>")
    manual_seed(5)
    cfg = dict(TINY_QWEN3, vocab_size=n + 24, context_length=64)
    model = Qwen3Model(cfg).eval()
    ids = np.asarray([hf.encode(PLAIN).ids])
    first = int(generate(model, ids, 1, 64)[0, -1])
    head = model.out_head.weight.data
    head[n:] = 3.0 * head[first] + 0.05 * np.random.default_rng(0).standard_normal((24, head.shape[1]))
    assert (generate(model, ids, MAX_NEW, 64)[0] >= n).any()          # unmasked: undecodable ids
    manual_seed(7)
    assert (generate(model, ids, 30, 64, temperature=1.0)[0] >= n).any()
    save_pretrained_hf(model, tmp_path)

    trimmed = Qwen3Model(dict(cfg, vocab_size=n)).eval()               # the tokenizer's rows only
    trimmed.load_state_dict({k: v[:n] if k in ("tok_emb.weight", "out_head.weight") else v
                             for k, v in model.state_dict().items()})
    want = [int(t) for t in generate(trimmed, ids, MAX_NEW, 64)[0, ids.shape[1]:]]
    want = want[:want.index(endoftext)] if endoftext in want else want
    out = subprocess.run([sys.executable, "-m", "tinygpt", "generate", "--model", str(tmp_path),
                          "--prompt", PLAIN, "--max-new-tokens", str(MAX_NEW)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip("\n") == PLAIN + hf.decode(want, skip_special_tokens=False)

    engine = Engine(load_text_model(tmp_path, chat=True), "tiny")
    with engine.turn():
        served = list(engine.tokens([int(i) for i in ids[0]], Settings(
            prompt=PLAIN, chat=False, max_tokens=30, temperature=1.0, seed=7)))
    assert served and max(served) < n
