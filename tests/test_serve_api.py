"""`tinygpt serve`'s OpenAI-compatible API, driven by the official `openai` Python client against a
server started as a user starts it (a tiny offline checkpoint, 127.0.0.1, a free port): the model
list, chat completions streamed and not, completions, `stop`, `usage`, seeds, and the streamed
tokens against `tinygpt.generate` on the same checkpoint with the same seed and settings."""
import numpy as np
import pytest

from test_serve_helpers import TIMEOUT, ServerProcess, events, make_checkpoint, post
from tinygpt import generate, manual_seed

openai = pytest.importorskip("openai", reason="the openai client is a test dependency ([test])")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("serve_api") / "tiny")


@pytest.fixture(scope="module")
def server(checkpoint):
    server = ServerProcess(checkpoint, "--max-tokens", "40")
    yield server
    assert server.stop() == 0, server.stderr


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=TIMEOUT,
                         max_retries=0)


@pytest.fixture(scope="module")
def text_model(checkpoint):
    from tinygpt.cli.models import load_text_model
    return load_text_model(str(checkpoint), chat=True)


def reference(text_model, prompt_ids, seed, max_tokens, temperature=1.0, top_p=None, top_k=None):
    """What tinygpt.generate makes after prompt_ids with this seed and these settings: the new
    token ids, up to the first of the model's end tokens."""
    manual_seed(seed)
    ids = np.asarray(prompt_ids, dtype=np.int64)[None, :]             # (1, n)
    window = min(text_model.context_length, ids.shape[1] + max_tokens)
    out = generate(text_model.model, ids, max_tokens, window, temperature=temperature,
                   top_k=top_k, eos_id=text_model.stop_ids[0], top_p=top_p)
    new = [int(i) for i in out[0, ids.shape[1]:]]
    ends = [n for n, i in enumerate(new) if i in text_model.stop_ids]
    return new[:ends[0]] if ends else new


def plain_ids(text_model, text):
    return text_model.tokenizer.encode(text, allowed_special={"<|endoftext|>"})


def test_the_model_list_names_the_one_model(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_a_chat_completion_is_the_alpaca_prompt_answered(client, text_model):
    answer = client.chat.completions.create(
        model="anything", messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=9, temperature=0.9, seed=11)
    prompt = text_model.prompt_ids("Name a colour.")  # chapter 7's Alpaca format
    want = reference(text_model, prompt, 11, 9, temperature=0.9)
    choice = answer.choices[0]
    assert answer.object == "chat.completion" and answer.model == "tiny"
    assert choice.message.role == "assistant"
    assert choice.message.content == text_model.tokenizer.decode(want)
    assert choice.finish_reason == ("length" if len(want) == 9 else "stop")
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (len(prompt), len(want))
    assert answer.usage.total_tokens == len(prompt) + len(want)


def test_streamed_chat_tokens_equal_tinygpts_generate(client, server, text_model):
    settings = dict(max_tokens=24, temperature=0.8, top_p=0.95, seed=5)
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Tell me a story."}], stream=True,
        stream_options={"include_usage": True}, **settings)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    prompt = text_model.prompt_ids("Tell me a story.")
    want = reference(text_model, prompt, 5, 24, temperature=0.8, top_p=0.95)
    assert text == text_model.tokenizer.decode(want)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("length", "stop")
    assert chunks[-1].usage.completion_tokens == len(want)
    # the page's stream carries the token ids themselves: the very same ids
    status, body = post(server.url, "/api/generate", {"prompt": "Tell me a story.", "mode": "chat",
                                                       **settings})
    sent = events(body)
    assert status == 200 and [i for i, _ in sent[0]["prompt"]] == prompt
    assert [e["token"][0] for e in sent if "token" in e] == want


def test_a_completion_continues_the_plain_text(client, text_model):
    answer = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=7,
                                       temperature=1.0, top_p=0.5, seed=2)
    prompt = plain_ids(text_model, "Once upon a time")
    want = reference(text_model, prompt, 2, 7, top_p=0.5)
    assert answer.object == "text_completion"
    assert answer.choices[0].text == text_model.tokenizer.decode(want)
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (len(prompt), len(want))


def test_a_streamed_completion_equals_the_whole_one(client):
    args = dict(model="tiny", prompt="The sea", max_tokens=12, seed=8, temperature=1.2)
    whole = client.completions.create(**args).choices[0].text
    parts = [c.choices[0].text for c in client.completions.create(stream=True, **args) if c.choices]
    assert "".join(parts) == whole and len([p for p in parts if p]) > 1


def test_a_seeded_request_is_reproducible_and_the_seed_matters(client):
    def ask(seed):
        return client.completions.create(model="tiny", prompt="Hello", max_tokens=10,
                                         temperature=1.0, seed=seed).choices[0].text
    assert ask(3) == ask(3)
    assert len({ask(3), ask(4), ask(5)}) > 1


def test_greedy_decoding_ignores_the_seed(client, text_model):
    answers = {client.completions.create(model="tiny", prompt="Hello", max_tokens=6,
                                         temperature=0, seed=s).choices[0].text for s in (1, 2)}
    want = reference(text_model, plain_ids(text_model, "Hello"), 0, 6, temperature=0.0)
    assert answers == {text_model.tokenizer.decode(want)}


@pytest.mark.parametrize("stream", [False, True])
def test_stop_ends_the_text_before_the_stop_string(client, text_model, stream):
    prompt = plain_ids(text_model, "A list:")
    want = reference(text_model, prompt, 9, 20)
    full = text_model.tokenizer.decode(want)
    stop = text_model.tokenizer.decode(want[5:7])  # two tokens from the middle of the text
    args = dict(model="tiny", prompt="A list:", max_tokens=20, temperature=1.0, seed=9,
                stop=[stop, "never appears \u2603"])
    if stream:
        chunks = [c for c in client.completions.create(stream=True, **args) if c.choices]
        text = "".join(c.choices[0].text for c in chunks)
        reason = chunks[-1].choices[0].finish_reason
    else:
        answer = client.completions.create(**args)
        text, reason = answer.choices[0].text, answer.choices[0].finish_reason
        assert answer.usage.completion_tokens == 7  # generation stopped at the stop string
    assert text == full[:full.index(stop)] and reason == "stop"
    assert stop not in text


def test_extra_sampling_field_top_k_is_honoured(client, text_model):
    answer = client.completions.create(model="tiny", prompt="Hi", max_tokens=8, seed=4,
                                       temperature=1.0, extra_body={"top_k": 3})
    want = reference(text_model, plain_ids(text_model, "Hi"), 4, 8, top_k=3)
    assert answer.choices[0].text == text_model.tokenizer.decode(want)


def test_errors_reach_the_client_in_openais_shape(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                       max_tokens=1_000_000)
    assert err.value.status_code == 400
    assert err.value.body["param"] == "max_tokens" and "limit" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="x", temperature=-1.0)
