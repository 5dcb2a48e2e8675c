"""Conversations: each family's prompt for a list of messages, and `tinygpt chat` keeping its
history.

Per family (Qwen3, Llama 3, Gemma 3, Olmo 3 Instruct and Think) a two-exchange conversation,
with and without a system message, must give the prompt text spelled out here by hand from the
family's published chat format (the expected strings are written from the format, not printed by
the code), its ids must be the `tokenizers` / tiktoken encoding of that text and decode back to
it, and a one-message conversation must give exactly the single-message prompt of today. Then
`tinygpt chat` in-process with input piped in, on a tiny random Qwen3: the ids given to the model
for the second message hold the first exchange, `/new` forgets it, a reply stopped by Ctrl-C is
not kept, the oldest exchanges are dropped (said once on stderr) when the context is short, and a
GPT-2 checkpoint keeps answering each message on its own."""
import importlib
import io
import sys

import pytest

from tinygpt import GPTModel, manual_seed
from tinygpt.errors import InputError
from tinygpt.model import Qwen3Model
from tinygpt.tokenizer import ChatFormat, Gemma3Tokenizer, Llama3Tokenizer, Olmo3Tokenizer
from tinygpt.tokenizer import Qwen3Tokenizer
from tinygpt.tokenizer.qwen3 import check_conversation
from test_serve_helpers import make_hf_folder
from tokenizer_files import write_llama3_tokenizer_model, write_qwen3_tokenizer_json

tokenizers = pytest.importorskip("tokenizers")

SYSTEM, Q1, A1, Q2 = "Be brief.", "Hi there.", "Hello! How can I help?", "Tell me a story."
TWO = [("user", Q1), ("assistant", A1), ("user", Q2)]
OLMO3_NO_FUNCTIONS = " You do not currently have access to any functions. <functions></functions>"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from test_chat_families import write_gemma3_tokenizer_json, write_olmo3_tokenizer_json
    folder = tmp_path_factory.mktemp("chat-history-tokenizers")
    return {"qwen3": write_qwen3_tokenizer_json(folder / "qwen3.json"),
            "gemma3": write_gemma3_tokenizer_json(folder / "gemma3.json"),
            "olmo3": write_olmo3_tokenizer_json(folder / "olmo3.json"),
            "llama3": write_llama3_tokenizer_model(folder / "tokenizer.model")}


def hf_ids(path, text):
    return tokenizers.Tokenizer.from_file(str(path)).encode(text, add_special_tokens=False).ids


# ---- Qwen3: ChatML; an earlier assistant turn keeps only what follows its </think> -----------
QWEN3_TWO = ("<|im_start|>user\nHi there.<|im_end|>\n"
             "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
             "<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("thinking", [False, True])
def test_qwen3_conversation(files, thinking):
    tok = Qwen3Tokenizer(files["qwen3"], add_generation_prompt=True, add_thinking=thinking)
    gen = "" if thinking else "<think>\n\n</think>\n\n"   # the empty block: thinking off
    for system, want in ((None, QWEN3_TWO + gen),
                         (SYSTEM, "<|im_start|>system\nBe brief.<|im_end|>\n" + QWEN3_TWO + gen)):
        messages = ([("system", system)] if system else []) + TWO
        assert tok.conversation_prompt(messages) == want
        ids = tok.encode_conversation(messages)
        assert ids == hf_ids(files["qwen3"], want) and tok.decode(ids) == want
    reasoned = [("user", Q1), ("assistant", "<think>\nLet me see.\n</think>\n\n" + A1),
                ("user", Q2)]
    assert tok.conversation_prompt(reasoned) == QWEN3_TWO + gen  # the reasoning is dropped
    assert tok.encode_conversation([("user", Q2)]) == tok.encode(Q2)


# ---- Llama 3: headers and <|eot_id|>, the default system message when none is given ---------
def llama3_turn(role, text):
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>"


def test_llama3_conversation(files):
    tok = Llama3Tokenizer(files["llama3"])
    chat = ChatFormat(tok)
    body = (llama3_turn("user", Q1) + llama3_turn("assistant", A1) + llama3_turn("user", Q2)
            + "<|start_header_id|>assistant<|end_header_id|>\n\n")
    for system, shown in ((None, "You are a helpful assistant."), (SYSTEM, SYSTEM)):
        messages = ([("system", system)] if system else []) + TWO
        want = "<|begin_of_text|>" + llama3_turn("system", shown) + body
        ids = chat.encode_dialog(messages)
        assert ids == tok.encode(want, allowed_special="all") and tok.decode(ids) == want
    padded = [("user", f"  {Q1}\n"), ("assistant", f"{A1}\n\n"), ("user", Q2)]
    assert chat.encode_dialog(padded) == chat.encode_dialog(TWO)  # contents stripped, as Meta's
    assert chat.encode_dialog([("user", Q2)]) == chat.encode(Q2)


# ---- Gemma 3: user / model turns; a system message opens the first user turn ----------------
def test_gemma3_conversation(files):
    tok = Gemma3Tokenizer(files["gemma3"])
    rest = ("<start_of_turn>model\nHello! How can I help?<end_of_turn>\n"
            "<start_of_turn>user\nTell me a story.<end_of_turn>\n<start_of_turn>model\n")
    for system, first in ((None, "Hi there."), (SYSTEM, "Be brief.\n\nHi there.")):
        messages = ([("system", system)] if system else []) + TWO
        text = f"<start_of_turn>user\n{first}<end_of_turn>\n" + rest
        assert tok.conversation_prompt(messages) == text
        ids = tok.encode_conversation(messages)
        assert ids == hf_ids(files["gemma3"], "<bos>" + text) and tok.decode(ids) == "<bos>" + text
    assert tok.encode_conversation([("user", Q2)]) == tok.encode(Q2)
    with pytest.raises(InputError, match="alternate"):
        tok.encode_conversation([("user", Q1), ("user", Q2)])
    with pytest.raises(InputError, match="message 1 is another assistant"):
        tok.encode_conversation([("system", SYSTEM), ("assistant", A1), ("user", Q2)])


# ---- Olmo 3: ChatML after a system turn; Think's generation prompt opens <think> ------------
OLMO3_BODY = ("<|im_start|>user\nHi there.<|im_end|>\n"
              "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
              "<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("think, default", [
    (False, "You are a helpful function-calling AI assistant." + OLMO3_NO_FUNCTIONS),
    (True, "You are a helpful AI assistant.")], ids=["instruct", "think"])
def test_olmo3_conversation(files, think, default):
    tok = Olmo3Tokenizer(files["olmo3"], think=think, system_prompt=default)
    opening = "<think>" if think else ""
    for system, shown in ((None, default), (SYSTEM, "Be brief." + OLMO3_NO_FUNCTIONS)):
        messages = ([("system", system)] if system else []) + TWO
        want = f"<|im_start|>system\n{shown}<|im_end|>\n" + OLMO3_BODY + opening
        assert tok.conversation_prompt(messages) == want
        ids = tok.encode_conversation(messages)
        assert ids == hf_ids(files["olmo3"], want) and tok.decode(ids) == want
    whole = [("user", Q1), ("assistant", "<think>Hmm.</think>" + A1), ("user", Q2)]
    assert "<|im_start|>assistant\n<think>Hmm.</think>Hello!" in tok.conversation_prompt(whole)
    assert tok.encode_conversation([("user", Q2)]) == tok.encode(Q2)


@pytest.mark.parametrize("messages, problem", [
    ([], "no message"), ([("tool", "x"), ("user", Q1)], "role 'tool'"),
    ([("user", Q1), ("system", SYSTEM), ("user", Q2)], "only the first"),
    ([("user", Q1), ("assistant", A1)], "ends with a user message"),
    ([("user", 3)], "not text"), (["hi"], "(role, content) pairs")])
def test_a_conversation_the_formats_cannot_hold_is_refused(messages, problem):
    with pytest.raises(InputError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        check_conversation(messages)


# ---- tinygpt chat keeps the history -------------------------------------------------------
QWEN3 = {"vocab_size": 320, "context_length": 128, "emb_dim": 16, "n_heads": 4, "n_layers": 2,
         "hidden_dim": 24, "head_dim": 8, "qk_norm": True, "n_kv_groups": 2,
         "rope_base": 10_000.0}


@pytest.fixture(scope="module")
def qwen3_folder(tmp_path_factory):
    return make_hf_folder(tmp_path_factory.mktemp("chat-history-qwen3"), Qwen3Model, QWEN3,
                          write_qwen3_tokenizer_json, seed=11)


class Prompts:
    """What the model is given: wraps generate_stream to keep each prompt's ids and the ids
    generated after it."""

    def __init__(self, monkeypatch):
        gen = importlib.import_module("tinygpt.model.generate")  # the module, not the function
        self.prompts, self.generated, real = [], [], gen.generate_stream

        def recording(model, ids, *args, **kwargs):
            self.prompts.append([int(i) for i in ids[0]])
            self.generated.append([])
            for token in real(model, ids, *args, **kwargs):
                self.generated[-1].append(int(token[0, 0]))
                yield token
        monkeypatch.setattr(gen, "generate_stream", recording)


def chat_args(model, max_new_tokens):
    from tinygpt import cli
    cli._register_commands()
    parser, runners = cli.build_parser()
    args = parser.parse_args(["chat", "--model", str(model), "--max-new-tokens",
                              str(max_new_tokens), "--temperature", "0"])
    return args, runners["chat"]


def run_chat(model, lines, monkeypatch, max_new_tokens=6):
    """`tinygpt chat` with `lines` piped in -> (Prompts, stdout, stderr)."""
    prompts = Prompts(monkeypatch)
    args, run = chat_args(model, max_new_tokens)
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    run(args)
    monkeypatch.undo()
    return prompts, out.getvalue(), err.getvalue()


def replies(prompts, text_model):
    """The text of each reply: its generated ids before the first end token."""
    out = []
    for ids in prompts.generated:
        ends = [k for k, i in enumerate(ids) if i in text_model.stop_ids]
        out.append(text_model.tokenizer.decode(ids[:ends[0]] if ends else ids))
    return out


def qwen3_text_model(folder):
    from tinygpt.cli.models import load_text_model
    return load_text_model(folder, chat=True)


def test_the_second_prompt_holds_the_first_exchange(qwen3_folder, monkeypatch):
    prompts, out, err = run_chat(qwen3_folder, [Q1, Q2], monkeypatch)
    tm = qwen3_text_model(qwen3_folder)
    first, _ = replies(prompts, tm)
    assert "each reply sees the conversation so far" in out.splitlines()[0] and "/new" in out
    assert prompts.prompts[0] == tm.tokenizer.encode(Q1)            # today's one-message ids
    assert prompts.prompts[1] == tm.tokenizer.encode_conversation(
        [("user", Q1), ("assistant", first), ("user", Q2)])
    assert len(first) > 0 and "outgrew" not in err


def test_new_starts_a_fresh_conversation(qwen3_folder, monkeypatch):
    prompts, out, _ = run_chat(qwen3_folder, [Q1, "/new", Q2], monkeypatch)
    tm = qwen3_text_model(qwen3_folder)
    assert prompts.prompts == [tm.tokenizer.encode(Q1), tm.tokenizer.encode(Q2)]
    assert "a new conversation" in out


def test_a_stopped_reply_is_not_kept(qwen3_folder, monkeypatch):
    from tinygpt.cli import inference
    prompts = Prompts(monkeypatch)
    args, _ = chat_args(qwen3_folder, 6)
    session = inference.Session(args, chat=True)

    def ctrl_c(self, token):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:
        patch.setattr(inference.TextStream, "add", ctrl_c)
        inference._stoppable(lambda: session.chat_reply(Q1), at_terminal=True)
    reply = session.chat_reply(Q2)
    assert session.history == [(Q2, reply)]
    assert prompts.prompts[1] == session.text_model.tokenizer.encode(Q2)  # no trace of Q1


def test_the_oldest_exchanges_are_dropped_when_the_context_is_short(qwen3_folder, monkeypatch):
    """Room for 50 new tokens in a 128-token context: three messages cannot keep all their
    exchanges. Each prompt is the conversation kept so far with as few of its oldest exchanges
    dropped as make it fit with that room (a dropped one stays dropped), and the note is said
    once."""
    max_new, questions = 50, [Q1, Q2, "And another one, please."]
    prompts, _, err = run_chat(qwen3_folder, questions, monkeypatch, max_new_tokens=max_new)
    tm = qwen3_text_model(qwen3_folder)
    exchanges, start = list(zip(questions, replies(prompts, tm))), 0
    for n, (question, prompt) in enumerate(zip(questions, prompts.prompts)):
        start = next(k for k in range(start, n + 1) if k == n or len(conversation(
            tm, exchanges[k:n], question)) + max_new <= tm.context_length)
        assert prompt == conversation(tm, exchanges[start:n], question), n
    assert start > 0 and err.count("outgrew the context window") == 1


def conversation(tm, exchanges, question):
    turns = [t for q, a in exchanges for t in (("user", q), ("assistant", a))]
    return tm.tokenizer.encode_conversation(turns + [("user", question)])


def test_a_gpt2_checkpoint_answers_each_message_on_its_own(tmp_path, monkeypatch):
    from test_cli_use import CFG
    from tinygpt.cli.inference import alpaca_prompt
    from tinygpt.tokenizer import get_gpt2_tokenizer
    from tinygpt.train.checkpoint import save_checkpoint
    manual_seed(7)
    save_checkpoint(tmp_path / "model.safetensors", GPTModel(CFG), config=CFG)
    prompts, out, _ = run_chat(tmp_path / "model.safetensors", [Q1, Q2], monkeypatch)
    gpt2 = get_gpt2_tokenizer()
    assert prompts.prompts == [gpt2.encode(alpaca_prompt(q)) for q in (Q1, Q2)]
    assert "each message is answered on its own" in out.splitlines()[0]


def test_help_names_new_next_to_exit(capsys):
    from tinygpt import cli
    cli._register_commands()
    parser, _ = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["chat", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "/new starts a new conversation; /exit or /quit ends" in text
    assert "Each reply sees the conversation so far" in text
