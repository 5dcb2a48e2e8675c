"""The OpenAI-compatible API and the page's own endpoints: each request body checked field by field
(a wrong type or range is an HTTP 400 naming the field), and the answers in OpenAI's shapes:
`chat.completion` / `chat.completion.chunk`, `text_completion`, `usage`, `finish_reason`.

Fields read: messages (chat: the whole conversation, system (or developer) / user / assistant
roles, a system message only first, ending with the user message to answer, in the model's chat
template as `tinygpt chat` builds it; GPT-2 and tinygpt checkpoints, whose chapter-7 Alpaca
prompt has no multi-turn form, answer the last user message alone) or prompt (completions),
max_tokens (or max_completion_tokens), temperature (0 to 2, 0 = greedy), top_p, stop (a string
or up to 4), seed, stream, stream_options.include_usage, n (1 only), and top_k (beyond OpenAI's
API, as llama.cpp and Ollama accept it). `model` is ignored: the server answers with the model
it was started with, and takes no model names or paths from requests."""
import contextlib
import time
import uuid

from .engine import Settings, TextOut
from .errors import RequestError

MAX_STOPS = 4


def _field(body: dict, name: str, kinds, default=None, what: str = ""):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise RequestError(f"'{name}' must be {what}, got {type(value).__name__} {value!r:.40}",
                           param=name, code="invalid_type")
    return value


def _number(body, name, default, low, high, low_open=False):
    value = _field(body, name, (int, float), default, f"a number in {'(' if low_open else '['}"
                                                      f"{low}, {high}]")
    if value is None:
        return None
    if not (low < value <= high if low_open else low <= value <= high):
        raise RequestError(f"'{name}' must be in {'(' if low_open else '['}{low}, {high}], got "
                           f"{value}", param=name, code="invalid_value")
    return float(value)


def _integer(body, name, default, low, high, why=""):
    value = _field(body, name, (int,), default, f"an integer in [{low}, {high}]")
    if value is not None and not low <= value <= high:
        raise RequestError(f"'{name}' must be an integer in [{low}, {high}]{why}, got {value}",
                           param=name, code="invalid_value")
    return value


def _stops(body) -> tuple:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) \
            or len(stops) > MAX_STOPS:
        raise RequestError(f"'stop' must be a non-empty string or a list of up to {MAX_STOPS} of "
                           "them", param="stop", code="invalid_value")
    return tuple(stops)


def _settings(body: dict, engine, prompt: str, chat: bool) -> Settings:
    if _integer(body, "n", 1, 1, 1, " (one choice per request)") != 1:
        raise RequestError("'n' must be 1", param="n")
    limit = " (this server's limit, tinygpt serve --max-tokens)"
    max_tokens = _integer(body, "max_tokens", None, 1, engine.max_tokens, limit)
    if max_tokens is None:
        max_tokens = _integer(body, "max_completion_tokens", None, 1, engine.max_tokens, limit)
    top_p = _number(body, "top_p", None, 0.0, 1.0, low_open=True)
    return Settings(prompt=prompt, chat=chat, max_tokens=max_tokens,
                    temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                    top_p=top_p, top_k=_integer(body, "top_k", None, 1, 1 << 20),
                    seed=_integer(body, "seed", None, 0, (1 << 63) - 1), stop=_stops(body))


def _stream_flags(body) -> tuple:
    stream = _field(body, "stream", (bool,), False, "true or false")
    options = _field(body, "stream_options", (dict,), {}, "an object")
    return stream, bool(_field(options, "include_usage", (bool,), False, "true or false"))


def _message_text(message, index: int) -> str:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise RequestError(f"messages[{index}] must be an object with a 'role' and a 'content'",
                           param="messages")
    content = message.get("content")
    if content is None and message["role"] != "user":  # an assistant's tool call, say
        return ""
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        if not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
            raise RequestError(f"messages[{index}].content parts must be text parts",
                               param="messages")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise RequestError(f"messages[{index}].content must be a string", param="messages")
    return content


def parse_chat(body: dict, engine):
    """-> (Settings, stream, include_usage) of a chat completion request; the Settings' prompt
    is the conversation, ((role, content), ...), each user message stripped as `tinygpt chat`
    strips the lines typed, the others as sent (an assistant reply sent back as the server wrote
    it gives `tinygpt chat`'s prompt); a "developer" message is a system message, as OpenAI
    renamed it. RequestError for a role other than system (developer) / user / assistant, a
    system message after the first, or a last message that is not a user's with text."""
    from ..errors import InputError
    from ..tokenizer.qwen3 import check_conversation
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of messages", param="messages")
    texts = [(m.get("role"), _message_text(m, i)) for i, m in enumerate(messages)]
    texts = [("system" if role == "developer" else role,   # OpenAI's newer name for system
              text.strip() if role == "user" else text) for role, text in texts]
    try:
        conversation = tuple(check_conversation(texts))
    except InputError as err:
        raise RequestError(f"'messages': {err}", param="messages") from None
    if not conversation[-1][1]:
        raise RequestError("the last user message is empty: there is nothing to answer",
                           param="messages")
    return (_settings(body, engine, conversation, chat=True), *_stream_flags(body))


def parse_completion(body: dict, engine):
    """-> (Settings, stream, include_usage) of a completion request (plain continuation)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise RequestError("'prompt' must be a non-empty string", param="prompt")
    return (_settings(body, engine, prompt, chat=False), *_stream_flags(body))


def parse_page(body: dict, engine) -> Settings:
    """The page's request: prompt, mode ("chat" or "plain") and the sampling controls."""
    prompt = _field(body, "prompt", (str,), "", "a string")
    mode = _field(body, "mode", (str,), "chat", '"chat" or "plain"')
    if mode not in ("chat", "plain") or not prompt.strip():
        raise RequestError('give a non-empty prompt and mode "chat" or "plain"', param="prompt")
    return _settings(body, engine, prompt, chat=mode == "chat")


class Run:
    """One generation: iterate for (token id, new text); then `text`, `finish_reason`, `usage`.

    A chat reply begins with `opening`, the text model's `reply_opening` (Olmo 3 Think's
    "<think>": its template's generation prompt opens the reasoning, so the model writes inside
    it), as `tinygpt chat` shows it: `text` is the opening then the generated text, and a stream
    sends the opening in its first delta. The opening is the prompt's last tokens, not a
    generated one: usage counts them in prompt_tokens, not completion_tokens, and max_tokens
    limits the generated tokens alone. Stop strings are looked for in the generated text only:
    the opening, like the rest of the prompt, is never searched, so a stop string neither cuts
    it nor matches across its end (stop "<think>" ends the reply at a <think> the model writes).
    A plain completion has no chat template, so no opening."""

    def __init__(self, engine, settings: Settings, client_gone=lambda: False):
        self.engine, self.settings, self.client_gone = engine, settings, client_gone
        if isinstance(settings.prompt, tuple):  # a chat's messages (parse_chat)
            self.prompt_ids = _conversation_ids(engine, settings.prompt)
        else:
            self.prompt_ids = engine.prompt_ids(settings.prompt, settings.chat)
        self.opening = engine.text_model.reply_opening if settings.chat else ""
        if settings.max_tokens is None:  # OpenAI's default: as many as fit, up to the limit
            room = engine.context_length - len(self.prompt_ids)
            settings.max_tokens = max(1, min(engine.max_tokens, room))
        engine.check_room(len(self.prompt_ids), settings.max_tokens)
        self.generated, self.finish_reason, self.text = [], "length", ""

    def __iter__(self):
        out = TextOut(self.engine.tokenizer, self.settings.stop)
        tokens = self.engine.tokens(self.prompt_ids, self.settings, self.client_gone)
        with contextlib.closing(tokens):
            for token in tokens:
                self.generated.append(token)
                delta = out.add(token)
                yield token, delta
                if out.stopped:
                    break
        if out.stopped or len(self.generated) < self.settings.max_tokens:
            self.finish_reason = "stop"          # a stop string or an end token
        tail = out.finish()
        self.text = self.opening + out.text
        if tail:
            yield None, tail

    @property
    def usage(self) -> dict:
        """prompt_tokens hold a chat reply's opening (see the class); completion_tokens count
        what the model generated, its end token excepted."""
        n, m = len(self.prompt_ids), len(self.generated)
        return {"prompt_tokens": n, "completion_tokens": m, "total_tokens": n + m}


def _conversation_ids(engine, messages) -> list:
    """The prompt ids of a chat's messages in the model's chat template (TextModel's
    conversation_ids); a conversation the template refuses (Gemma 3's turns that do not
    alternate) is a RequestError naming the problem."""
    from ..errors import InputError
    try:
        return [int(i) for i in engine.text_model.conversation_ids(list(messages))]
    except InputError as err:
        raise RequestError(f"'messages': {err}", param="messages") from None


def _head(kind: str, engine) -> dict:
    prefix = "chatcmpl" if kind.startswith("chat") else "cmpl"
    return {"id": f"{prefix}-{uuid.uuid4().hex[:24]}", "object": kind,
            "created": int(time.time()), "model": engine.name, "system_fingerprint": "tinygpt"}


def complete(run: Run, chat: bool) -> dict:
    """Run to the end -> a chat.completion or text_completion object."""
    for _ in run:
        pass
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": run.text},
                  "logprobs": None, "finish_reason": run.finish_reason}
    else:
        choice = {"index": 0, "text": run.text, "logprobs": None,
                  "finish_reason": run.finish_reason}
    return {**_head("chat.completion" if chat else "text_completion", run.engine),
            "choices": [choice], "usage": run.usage}


def chunks(run: Run, chat: bool, include_usage: bool):
    """The streamed answer: chat.completion.chunk (or text_completion) objects, one per piece of
    text, then one with the finish_reason, then (stream_options.include_usage) the usage. A chat
    stream's first chunk names the role and carries the reply's opening ("" for most models)."""
    head = _head("chat.completion.chunk" if chat else "text_completion", run.engine)

    def chunk(text, finish=None):
        if chat:
            delta = {} if text is None else {"content": text}
            return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": finish}]}
        return {**head, "choices": [{"index": 0, "text": text or "", "logprobs": None,
                                     "finish_reason": finish}]}
    if chat:
        yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                          "content": run.opening},
                                    "logprobs": None, "finish_reason": None}]}
    for _, text in run:
        if text:
            yield chunk(text)
    yield chunk(None, run.finish_reason)
    if include_usage:
        yield {**head, "choices": [], "usage": run.usage}


def models(engine) -> dict:
    return {"object": "list", "data": [{"id": engine.name, "object": "model",
                                        "created": 0, "owned_by": "tinygpt"}]}


def parse_inspect(body: dict, engine) -> tuple:
    """-> (token ids, position, layer, k): `ids` (a list of token ids, as the page sends) or
    `text` (tokenized as it is), position (default the last), layer (default 0), k (default 10)."""
    ids = body.get("ids")
    if ids is None:
        text = _field(body, "text", (str,), "", "a string")
        if not text:
            raise RequestError("give 'ids' (token ids) or 'text'", param="ids")
        ids = engine.prompt_ids(text, chat=False)
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                            for i in ids) or not ids:
        raise RequestError("'ids' must be a non-empty list of integer token ids", param="ids")
    if len(ids) > engine.context_length:
        raise RequestError(f"{len(ids)} tokens exceed the model's context length of "
                           f"{engine.context_length}", param="ids")
    position = _integer(body, "position", len(ids) - 1, 0, len(ids) - 1)
    layer = _integer(body, "layer", 0, 0, len(engine.model.trf_blocks) - 1)
    return ids, position, layer, _integer(body, "k", 10, 1, 100)


def inspection(engine, ids, position, layer, k) -> dict:
    """What the page shows for a clicked token (call inside engine.turn())."""
    from ..viz.attention import inspect_position
    got = inspect_position(engine.model, ids, position, layer, k)
    piece = engine.piece
    answer = {"position": got.position, "layer": layer, "prob_sum": got.prob_sum,
              "token": {"id": ids[position], "text": piece(ids[position])},
              "top": [{"id": i, "text": piece(i), "prob": p}
                      for i, p in zip(got.top_ids, got.top_probs)],
              "attention": got.attention.tolist(),
              "average": got.attention.mean(axis=0).tolist(),
              "context": [piece(i) for i in ids[:position + 1]],
              "lens": [{"layer": n, "id": i, "text": piece(i), "prob": p}
                       for n, (i, p) in enumerate(zip(got.lens_ids, got.lens_probs))],
              "next": None}
    if got.next_id is not None:
        answer["next"] = {"id": got.next_id, "text": piece(got.next_id), "prob": got.next_prob,
                          "rank": got.next_rank}
    return answer


def info(engine) -> dict:
    att = engine.model.trf_blocks[0].att
    return {"model": engine.name, "style": engine.text_model.style, "mode": engine.page_mode,
            "n_layers": len(engine.model.trf_blocks), "n_heads": att.num_heads,
            "context_length": engine.context_length, "max_tokens": engine.max_tokens}
