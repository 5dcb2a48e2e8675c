"""`tinygpt serve` with an Olmo 3 Think model: its chat prompt ends in "<think>" (the template's
generation prompt opens the reasoning), so a chat reply begins with that opening, in the whole
and the streamed answer alike, and equals `tinygpt chat`'s reply (cli.inference.Session, the
code the command runs) for the same greedy or seeded settings. The opening comes from the
prompt: usage counts it there, max_tokens limits the generated tokens only, and stop strings
are looked for in the generated text only. An Instruct folder of the same model, and plain
completions, are unchanged. A tiny random Olmo3Model in Hugging Face's layout beside a
tokenizer.json and a chat template written as the released ones are (test_olmo3_think.py)."""
import shutil

import numpy as np
import pytest

from test_chat_families import MESSAGE, OLMO3_SYSTEM, write_olmo3_tokenizer_json
from test_olmo3_think import INSTRUCT_PROMPT, SYSTEM_31, THINK_PROMPT, olmo3_template, put_template
from test_serve_helpers import events, in_process_server, make_hf_folder, post
from tinygpt import cli, manual_seed
from tinygpt.cli import inference
from tinygpt.model import Olmo3Model, generate

OLMO3 = {"vocab_size": 408, "context_length": 256, "emb_dim": 32, "n_heads": 4, "n_layers": 4,
         "hidden_dim": 48, "head_dim": 8, "n_kv_groups": 2, "rope_base": 10_000.0,
         "sliding_window": 4, "layer_types": None}
MAX_NEW = 12
OPENING = "<think>"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{"think": folder, "instruct": folder}: one tiny model, the two templates."""
    base = make_hf_folder(tmp_path_factory.mktemp("serve_olmo3"), Olmo3Model, OLMO3,
                          write_olmo3_tokenizer_json, seed=11)
    out = {}
    for kind, system, generation in (("think", SYSTEM_31, THINK_PROMPT),
                                     ("instruct", OLMO3_SYSTEM, INSTRUCT_PROMPT)):
        out[kind] = shutil.copytree(base, base.parent / f"{base.name}-{kind}")
        put_template(out[kind], olmo3_template(system, generation, True), as_jinja=False)
    return out


@pytest.fixture(scope="module")
def think(folders):
    with in_process_server(folders["think"], max_tokens=MAX_NEW) as server:
        yield server


@pytest.fixture(scope="module")
def instruct(folders):
    with in_process_server(folders["instruct"], max_tokens=MAX_NEW) as server:
        yield server


def cli_reply(folder, capsys, temperature=0.0, seed=123, max_new=MAX_NEW) -> str:
    """`tinygpt chat --model folder ...`'s reply to MESSAGE: the text Session.reply returns,
    checked to be what it printed."""
    cli._register_commands()
    parser, _ = cli.build_parser()
    args = parser.parse_args(["chat", "--model", str(folder), "--max-new-tokens", str(max_new),
                              "--temperature", str(temperature), "--seed", str(seed)])
    capsys.readouterr()
    text = inference.Session(args, chat=True).reply(MESSAGE)
    assert capsys.readouterr().out == text + "\n"
    return text


def reference(engine, ids, n, temperature=0.0, seed=0) -> list:
    """tinygpt.generate's tokens after `ids`, cut before the first end token."""
    manual_seed(seed)
    out = generate(engine.model, np.asarray([ids]), n, min(OLMO3["context_length"], len(ids) + n),
                   temperature=temperature, eos_id=engine.text_model.stop_ids[0])
    new = [int(i) for i in out[0, len(ids):]]
    ends = [k for k, i in enumerate(new) if i in engine.text_model.stop_ids]
    return new[:ends[0]] if ends else new


def ask(server, stream=False, **fields):
    """A chat completion of MESSAGE -> (content, finish_reason, usage, first delta or None)."""
    body = {"messages": [{"role": "user", "content": MESSAGE}], "max_tokens": MAX_NEW,
            "temperature": 0, **fields}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    status, answer = post(server.url, "/v1/chat/completions", body)
    assert status == 200, answer
    if not stream:
        choice = answer["choices"][0]
        return choice["message"]["content"], choice["finish_reason"], answer["usage"], None
    sent = events(answer)
    assert sent[-1] == "[DONE]"
    deltas = [e["choices"][0]["delta"] for e in sent[:-1] if e["choices"]]
    finish = [e["choices"][0]["finish_reason"] for e in sent[:-1] if e["choices"]][-1]
    content = "".join(d.get("content", "") for d in deltas)
    return content, finish, sent[-2]["usage"], deltas[0]


def generated_text(server) -> str:
    """The greedy reply's generated part (after the opening), from tinygpt.generate."""
    engine = server.engine
    return engine.tokenizer.decode(reference(engine, engine.prompt_ids(MESSAGE, True), MAX_NEW))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_think_reply_opens_with_think_as_the_chat_shows_it(think, folders, capsys, stream):
    engine = think.engine
    assert engine.text_model.reply_opening == OPENING
    prompt = engine.prompt_ids(MESSAGE, True)
    assert engine.tokenizer.decode(prompt).endswith("<|im_start|>assistant\n" + OPENING)
    want = cli_reply(folders["think"], capsys)
    content, finish, usage, first = ask(think, stream)
    assert content.startswith(OPENING) and content == want
    generated = reference(engine, prompt, MAX_NEW)
    assert want == OPENING + engine.tokenizer.decode(generated)
    # the opening is the prompt's: counted in prompt_tokens, not among the generated tokens
    assert usage == {"prompt_tokens": len(prompt), "completion_tokens": len(generated),
                     "total_tokens": len(prompt) + len(generated)}
    assert finish == ("length" if len(generated) == MAX_NEW else "stop")
    if stream:  # the opening goes out at once, in the first delta, with the role
        assert first == {"role": "assistant", "content": OPENING}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_seeded_sampled_think_reply_equals_the_chats(think, folders, capsys, stream):
    want = cli_reply(folders["think"], capsys, temperature=1.0, seed=5)
    content, *_ = ask(think, stream, temperature=1.0, seed=5)
    assert content == want and want.startswith(OPENING)
    assert ask(think, stream, temperature=1.0, seed=6)[0].startswith(OPENING)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_max_tokens_counts_the_generated_tokens_only(think, stream):
    engine = think.engine
    prompt = engine.prompt_ids(MESSAGE, True)
    generated = reference(engine, prompt, MAX_NEW)
    assert len(generated) > 3, "the tiny model ends too soon for this test"
    content, finish, usage, _ = ask(think, stream, max_tokens=3)
    assert content == OPENING + engine.tokenizer.decode(generated[:3])
    assert (finish, usage["completion_tokens"], usage["prompt_tokens"]) == ("length", 3, len(prompt))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_stop_strings_are_looked_for_in_the_generated_text_only(think, stream):
    text = generated_text(think)
    assert len(text) > 6 and OPENING not in text, text
    # a stop string that is the opening, or begins inside it and ends in the generated text,
    # leaves the reply whole: the opening is the prompt's and is never searched
    for stop in (OPENING, OPENING[-2:] + text[:3]):
        assert stop not in text
        content, finish, usage, _ = ask(think, stream, stop=stop)
        assert content == OPENING + text, stop
    # one found in the generated text cuts the reply there, after the opening
    at = next(i for i in range(1, len(text) - 1) if text[i:i + 2].isalnum())
    stop = text[at:at + 2]
    content, finish, usage, _ = ask(think, stream, stop=[stop, "\u2603"])
    assert content == OPENING + text[:text.find(stop)] and finish == "stop"


def test_a_plain_completion_has_no_opening(think):
    engine = think.engine
    ids = engine.prompt_ids("Once upon", chat=False)
    status, answer = post(think.url, "/v1/completions", {"prompt": "Once upon", "max_tokens": 6,
                                                         "temperature": 0})
    assert status == 200, answer
    assert answer["choices"][0]["text"] == engine.tokenizer.decode(reference(engine, ids, 6))
    status, body = post(think.url, "/v1/completions", {"prompt": "Once upon", "max_tokens": 6,
                                                       "temperature": 0, "stream": True})
    streamed = "".join(e["choices"][0]["text"] for e in events(body)[:-1])
    assert status == 200 and streamed == answer["choices"][0]["text"]


def test_the_page_shows_the_opening_as_the_replys_start(think):
    """The page's stream marks the prompt's last tokens that spell the opening (it is BPE text,
    a few tokens in Olmo 3): app.js shows them as the reply, and they stay prompt positions for
    the inspector."""
    engine = think.engine
    status, body = post(think.url, "/api/generate", {"prompt": MESSAGE, "mode": "chat",
                                                     "max_tokens": 5, "temperature": 0})
    sent = events(body)
    prompt = engine.prompt_ids(MESSAGE, True)
    assert status == 200 and [i for i, _ in sent[0]["prompt"]] == prompt
    n = sent[0]["opening"]
    pieces = [p for _, p in sent[0]["prompt"]]
    assert n >= 1 and "".join(pieces[-n:]) == OPENING       # exactly the opening's tokens
    assert engine.tokenizer.decode(prompt[:-n]).endswith("assistant\n")
    assert [e["token"][0] for e in sent if "token" in e] == reference(engine, prompt, 5)
    status, body = post(think.url, "/api/generate", {"prompt": MESSAGE, "mode": "plain",
                                                     "max_tokens": 2})
    assert status == 200 and events(body)[0]["opening"] == 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_instruct_reply_is_unchanged(instruct, folders, capsys, stream):
    engine = instruct.engine
    assert engine.text_model.reply_opening == ""
    prompt = engine.prompt_ids(MESSAGE, True)
    generated = reference(engine, prompt, MAX_NEW)
    content, _, usage, first = ask(instruct, stream)
    assert content == engine.tokenizer.decode(generated) == cli_reply(folders["instruct"], capsys)
    assert not content.startswith(OPENING) and usage["prompt_tokens"] == len(prompt)
    if stream:
        assert first == {"role": "assistant", "content": ""}
    status, body = post(instruct.url, "/api/generate", {"prompt": MESSAGE, "max_tokens": 2})
    assert status == 200 and events(body)[0]["opening"] == 0
