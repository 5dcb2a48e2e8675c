"""The model behind the server: one generation (or inspection) at a time, a bounded queue of
waiting requests, and text that streams out as tokens arrive, cut at `stop` strings.

`Engine.turn()` admits a request (the one running plus at most `queue_size` waiting, else
`ServerBusy`, HTTP 503) and holds the model's lock while the request uses it. `Engine.tokens`
yields generated token ids from `tinygpt.model.generate_stream`, the same loop `tinygpt generate`
runs, and stops when the client has gone, when the server shuts down, or at an end token."""
import contextlib
import secrets
import threading
from dataclasses import dataclass

import numpy as np

from .errors import RequestError, ServeError, ServerBusy


@dataclass
class Settings:
    """What one request asks for, checked (api.py builds it)."""
    prompt: str | tuple             # the text, or a chat's messages ((role, content), ...)
    chat: bool
    max_tokens: int | None          # None: as many as fit (api.Run settles it)
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple = ()


def plain_encoder(text_model):
    """The tokenizer of `text_model` without its chat format: the text as it is (a base model's
    continuation). `load_text_model(source, chat=True)` gives the chat format."""
    tokenizer = text_model.tokenizer
    if hasattr(tokenizer, "eot_id"):                         # Llama 3: <|begin_of_text|> first
        return lambda text: tokenizer.encode(text, bos=True)
    if hasattr(tokenizer, "apply_chat_template"):            # Qwen3
        return lambda text: tokenizer.encode(text, chat_wrapped=False)
    from ..tokenizer import ENDOFTEXT                        # GPT-2 and tinygpt checkpoints
    return lambda text: tokenizer.encode(text, allowed_special={ENDOFTEXT})


class Engine:
    """`text_model` (cli.models.TextModel, loaded with chat=True) served under the name `name`."""

    def __init__(self, text_model, name: str, max_tokens: int = 512, queue_size: int = 4,
                 wait_seconds: float = 120.0, page_mode: str = "chat"):
        self.text_model, self.name = text_model, name
        self.model, self.tokenizer = text_model.model, text_model.tokenizer
        self.max_tokens, self.wait_seconds, self.page_mode = max_tokens, wait_seconds, page_mode
        self.context_length = text_model.context_length
        self._plain = plain_encoder(text_model)
        self._lock = threading.Lock()
        self._admission = threading.BoundedSemaphore(queue_size + 1)  # running + waiting
        self.stopping = threading.Event()

    @contextlib.contextmanager
    def turn(self):
        """Hold the model for one request, waiting behind at most `queue_size` others."""
        if not self._admission.acquire(blocking=False):
            raise ServerBusy("the server is busy (a generation is running and the queue is "
                             "full): try again shortly")
        try:
            if not self._lock.acquire(timeout=self.wait_seconds):
                raise ServerBusy(f"the model stayed busy for {self.wait_seconds:.0f} s: try again")
            try:
                yield
            finally:
                self._lock.release()
        finally:
            self._admission.release()

    def prompt_ids(self, text: str, chat: bool) -> list:
        ids = self.text_model.prompt_ids(text) if chat else self._plain(text)
        ids = [int(i) for i in ids]
        if not ids:
            raise RequestError("the prompt is empty", param="prompt")
        return ids

    def opening_tokens(self, ids: list) -> int:
        """How many of the chat prompt `ids`' last tokens spell the text model's `reply_opening`,
        the start of the reply that the prompt holds (Olmo 3 Think's "<think>", BPE text of a few
        tokens): the page shows them as the reply's first tokens. 0 for a model without one."""
        opening = self.text_model.reply_opening
        if not opening:
            return 0
        for n in range(1, len(ids) + 1):
            if self.tokenizer.decode(ids[-n:]).endswith(opening):
                return n
        raise ServeError(f"the chat prompt does not end with the reply's opening {opening!r}")

    def check_room(self, n_prompt: int, max_tokens: int) -> None:
        if n_prompt + max_tokens > self.context_length:
            raise RequestError(f"the prompt ({n_prompt} tokens) plus max_tokens ({max_tokens}) "
                               f"exceed the model's context length of {self.context_length} "
                               f"tokens: shorten the prompt or lower max_tokens",
                               param="max_tokens", code="context_length_exceeded")

    def tokens(self, ids: list, settings: Settings, client_gone=lambda: False):
        """Generated token ids (ints) after prompt `ids`; call inside `turn()`. Seeds tinygpt's
        generator first (`settings.seed`, else a fresh random seed), so a seeded request draws
        exactly what `tinygpt.manual_seed(seed); tinygpt.generate(...)` draws."""
        from .. import manual_seed
        from ..model.generate import generate_stream
        if client_gone():  # it left while waiting in the queue
            return
        manual_seed(settings.seed if settings.seed is not None else secrets.randbits(63))
        prompt = np.asarray(ids, dtype=np.int64).reshape(1, -1)  # (1, n)
        window = min(self.context_length, prompt.shape[1] + settings.max_tokens)
        stream = generate_stream(self.model, prompt, settings.max_tokens, window,
                                 temperature=settings.temperature, top_k=settings.top_k,
                                 eos_id=self.text_model.stop_ids[0], top_p=settings.top_p)
        with contextlib.closing(stream):
            for token in stream:                             # (1, 1) ids of the new token
                if int(token[0, 0]) in self.text_model.stop_ids or self.stopping.is_set():
                    return
                yield int(token[0, 0])
                if client_gone():
                    return

    def piece(self, token_id: int) -> str:
        return self.tokenizer.decode([int(token_id)])


class TextOut:
    """Decoded text as token ids arrive, ready to send: a character split over several byte-level
    tokens is held back until complete, and so is any tail that may begin a `stop` string; the
    text ends before the first stop string (`stopped` turns True)."""

    def __init__(self, tokenizer, stops=()):
        self.tokenizer, self.stops = tokenizer, tuple(stops)
        self.ids, self.sent, self.stopped = [], 0, False
        self.text = ""

    def add(self, token_id: int) -> str:
        """The text that is new and safe to send after `token_id`."""
        self.ids.append(int(token_id))
        full = self.tokenizer.decode(self.ids)
        return self._advance(full, final=False)

    def finish(self) -> str:
        """What is left to send once generation has ended."""
        if self.stopped:
            return ""
        return self._advance(self.tokenizer.decode(self.ids), final=True)

    def _advance(self, full: str, final: bool) -> str:
        if self.stops:
            start = max(0, self.sent - max(len(s) for s in self.stops))
            hits = [i for i in (full.find(s, start) for s in self.stops) if i >= 0]
            if hits:
                self.stopped = True
                return self._send(full[:min(hits)])
        end = len(full)
        if not final:
            end = len(full.rstrip("\ufffd"))                 # an unfinished character
            for stop in self.stops:                          # a stop string may be starting
                for n in range(min(len(stop) - 1, end - self.sent), 0, -1):
                    if full[end - n:end] == stop[:n]:
                        end -= n
                        break
        return self._send(full[:max(end, self.sent)])

    def _send(self, upto: str) -> str:
        new = upto[self.sent:]
        self.sent, self.text = len(upto), upto
        return new
