"""`tinygpt serve`'s chat completions read the whole `messages` list (a tiny random Qwen3 in
Hugging Face's layout beside a tokenizer.json built here, offline): the prompt is the
conversation in the model's chat template (prompt_tokens is its length), the greedy reply is
`tinygpt chat`'s for the same conversation, a role other than system / user / assistant, a system
message after the first or a list not ending with a user message is an HTTP 400 in OpenAI's shape
naming `messages`, and the context-window check counts the whole conversation. The page's
one-prompt request and a one-message chat keep today's ids; a GPT-2 checkpoint answers the last
user message alone."""
import pytest

from test_chat_history import Q1, Q2, QWEN3, SYSTEM, qwen3_folder, replies, run_chat  # noqa: F401
from test_serve_helpers import assert_openai_error, events, in_process_server, make_checkpoint, post

MAX_NEW = 8


@pytest.fixture(scope="module")
def server(qwen3_folder):  # noqa: F811  (the fixture imported above)
    with in_process_server(qwen3_folder, max_tokens=16) as server:
        yield server


def chat(server, messages, **extra):
    return post(server.url, "/v1/chat/completions", {
        "messages": [{"role": r, "content": c} for r, c in messages], "temperature": 0,
        "max_tokens": MAX_NEW, **extra})


def test_the_whole_conversation_is_the_prompt(server):
    tm = server.engine.text_model
    for messages in ([("user", Q1), ("assistant", "Hello!"), ("user", Q2)],
                     [("system", SYSTEM), ("user", Q1), ("assistant", "Hello!"), ("user", Q2)]):
        status, answer = chat(server, messages)
        assert status == 200, answer
        assert answer["usage"]["prompt_tokens"] == len(tm.tokenizer.encode_conversation(messages))
    status, answer = chat(server, [("user", Q2)])   # one message: today's prompt
    assert answer["usage"]["prompt_tokens"] == len(tm.tokenizer.encode(Q2))
    status, answer = chat(server, [("developer", SYSTEM), ("user", Q2)])   # OpenAI's new name
    assert status == 200 and answer["usage"]["prompt_tokens"] == len(
        tm.tokenizer.encode_conversation([("system", SYSTEM), ("user", Q2)])), answer


def test_the_greedy_reply_is_tinygpt_chats_for_the_same_conversation(server, qwen3_folder,
                                                                     monkeypatch):  # noqa: F811
    prompts, _, _ = run_chat(qwen3_folder, [Q1, Q2], monkeypatch, max_new_tokens=MAX_NEW)
    first, second = replies(prompts, server.engine.text_model)
    status, answer = chat(server, [("user", Q1), ("assistant", first), ("user", Q2)])
    assert status == 200 and answer["choices"][0]["message"]["content"] == second
    assert answer["usage"]["prompt_tokens"] == len(prompts.prompts[1])


@pytest.mark.parametrize("messages, words", [
    ([("user", Q1), ("tool", "42"), ("user", Q2)], "role 'tool'"),
    ([("user", Q1), ("system", SYSTEM), ("user", Q2)], "only the first message"),
    ([("user", Q1), ("assistant", "Hello!")], "ends with a user message"),
    ([("system", SYSTEM)], "ends with a user message"),
    ([("user", "   ")], "the last user message is empty")])
def test_a_conversation_in_the_wrong_shape_is_a_400_naming_messages(server, messages, words):
    status, body = chat(server, messages)
    assert_openai_error(status, body, 400, param="messages")
    assert words in body["error"]["message"]


def test_a_turn_the_template_refuses_is_a_400_naming_messages(server):
    """The chat template's own refusal (here the tokenizer's, of a lone surrogate in an earlier
    assistant turn; Gemma 3's of turns that do not alternate) is answered as a bad request."""
    status, body = chat(server, [("user", Q1), ("assistant", "half \ud800 a character"),
                                 ("user", Q2)])
    assert_openai_error(status, body, 400, param="messages")
    assert body["error"]["message"].startswith("'messages': ")


def test_the_context_check_counts_the_whole_conversation(server):
    """A conversation whose earlier turns fill the context window is refused as OpenAI refuses
    it, although its last message alone would fit."""
    tm, long = server.engine.text_model, " ".join(["story"] * 40)
    messages = [("user", Q1), ("assistant", long), ("user", Q2)]
    n = len(tm.tokenizer.encode_conversation(messages))
    assert n + MAX_NEW > QWEN3["context_length"] >= len(tm.tokenizer.encode(Q2)) + MAX_NEW
    status, body = chat(server, messages)
    assert_openai_error(status, body, 400, param="max_tokens")
    assert body["error"]["code"] == "context_length_exceeded"
    assert f"({n} tokens)" in body["error"]["message"]


def test_the_page_still_sends_one_prompt(server):
    status, body = post(server.url, "/api/generate", {"prompt": Q2, "mode": "chat",
                                                       "max_tokens": 4, "temperature": 0})
    sent = events(body)
    assert status == 200 and [i for i, _ in sent[0]["prompt"]] == \
        server.engine.text_model.tokenizer.encode(Q2)


def test_a_gpt2_checkpoint_answers_the_last_user_message(tmp_path):
    from tinygpt.cli.inference import alpaca_prompt
    from tinygpt.tokenizer import get_gpt2_tokenizer
    with in_process_server(make_checkpoint(tmp_path), max_tokens=4) as gpt2:
        status, answer = chat(gpt2, [("system", SYSTEM), ("user", Q1), ("assistant", "Hi."),
                                     ("user", Q2)], max_tokens=4)
    assert status == 200, answer
    assert answer["usage"]["prompt_tokens"] == len(get_gpt2_tokenizer().encode(alpaca_prompt(Q2)))
