"""Llama 3's tokenizer and chat format, named and shaped as the book's
`llms_from_scratch.llama3.Llama3Tokenizer` and `ChatFormat`.

Meta ships Llama 3's byte-level BPE as `tokenizer.model`: a tiktoken ranks file (one
`base64(token bytes) rank` per line, 128,000 ranks). tiktoken runs it with Llama 3's
pre-tokenising pattern below; the 256 special tokens follow the ranks (ids 128000-128255 in the
real file: `<|begin_of_text|>`, `<|end_of_text|>`, reserved ones, the chat headers, `<|eot_id|>`).
The chat format of Llama 3 Instruct:

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n{system}<|eot_id|>
    <|start_header_id|>user<|end_header_id|>\\n\\n{message}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n

A conversation (`ChatFormat.encode_dialog`) is <|begin_of_text|>, then one header-content-
<|eot_id|> block per message in order (the system message first; the default one when the
conversation has none), each content stripped of surrounding whitespace, then the assistant's
header. Source read for the format (nothing copied beyond the special strings): Meta's
llama-models `models/llama3/tokenizer.py` (`ChatFormat.encode_message`, `encode_dialog_prompt`)
and the Llama 3.1/3.2 Instruct chat template (`message['content'] | trim`).
"""
from pathlib import Path

import tiktoken

from ..errors import InputError
from .pretokenize import check_ids, check_text
from .qwen3 import check_conversation

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Llama 3.1/3.2's 256 special tokens in id order after the last rank (Meta's llama-models tokenizer.py)
LLAMA3_SPECIALS = (["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
                    "<|python_tag|>"]
                   + [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - 11)])


def load_tiktoken_ranks(path) -> dict:
    """{token bytes: rank} from a tiktoken ranks file; InputError names the file and line."""
    import base64
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such tokenizer file (Llama 3's tokenizer.model)")
    ranks = {}
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError:
                raise InputError(f"{path}, line {number}: not `base64 rank`, so not a tiktoken "
                                 f"ranks file") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise InputError(f"{path}: its ranks are not 0..{len(ranks) - 1}, each once")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:  # tiktoken's Rust code panics on the first text holding such a byte
        raise InputError(f"{path}: lacks {len(missing)} of the 256 single-byte tokens (e.g. "
                         f"{bytes(missing[:3])!r}) every byte-level BPE needs, so it is not "
                         "Llama 3's tokenizer.model")
    return ranks


class Llama3Tokenizer:
    """Text <-> Llama 3 token ids through tiktoken. `special` maps every special token to its id."""

    def __init__(self, model_path):
        ranks = load_tiktoken_ranks(model_path)
        self.special = {token: len(ranks) + i for i, token in enumerate(LLAMA3_SPECIALS)}
        self.model = tiktoken.Encoding(name=Path(model_path).name, pat_str=LLAMA3_PATTERN,
                                       mergeable_ranks=ranks, special_tokens=self.special)
        self.bos_id = self.special["<|begin_of_text|>"]
        self.eos_id = self.special["<|end_of_text|>"]
        self.eot_id = self.special["<|eot_id|>"]
        self.pad_id = self.eot_id

    @property
    def n_words(self) -> int:
        return self.model.n_vocab

    def encode(self, text: str, bos: bool = False, eos: bool = False,
               allowed_special=frozenset(), disallowed_special="all") -> list:
        """Token ids of `text`, with `<|begin_of_text|>` first if `bos` and `<|end_of_text|>`
        last if `eos`. Special tokens written in `text` are refused (InputError) unless listed in
        `allowed_special` (or "all"), as tiktoken does."""
        if not isinstance(text, str):
            raise InputError(f"Llama3Tokenizer.encode takes a str, got {type(text).__name__}")
        check_text(text)  # tiktoken would quietly replace a lone surrogate
        try:
            ids = self.model.encode(text, allowed_special=allowed_special or frozenset(),
                                    disallowed_special=disallowed_special)
        except ValueError as e:
            raise InputError(f"the text holds a special token: {e}") from None
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids) -> str:
        return self.model.decode(check_ids(ids, self.n_words, "Llama3Tokenizer.decode"))


class ChatFormat:
    """Llama 3 Instruct's chat prompt around one user message (with a system message)."""

    def __init__(self, tokenizer: Llama3Tokenizer, *,
                 default_system="You are a helpful assistant."):
        self.tok = tokenizer
        self.default_system = default_system

    def encode_header(self, role: str) -> list:
        """<|start_header_id|>role<|end_header_id|>\\n\\n"""
        return ([self.tok.special["<|start_header_id|>"]] + self.tok.encode(role)
                + [self.tok.special["<|end_header_id|>"]] + self.tok.encode("\n\n"))

    _header = encode_header  # the book's private name

    def encode(self, user_message: str, system_message=None, allowed_special=None) -> list:
        """The ids of the whole prompt, ending with the assistant's header."""
        system = system_message if system_message is not None else self.default_system
        ids = [self.tok.bos_id]
        ids += self.encode_header("system")
        ids += self.tok.encode(system, allowed_special=allowed_special or frozenset())
        ids += [self.tok.eot_id]
        ids += self.encode_header("user") + self.tok.encode(user_message) + [self.tok.eot_id]
        return ids + self.encode_header("assistant")

    def encode_dialog(self, messages) -> list:
        """The ids of the prompt for `messages` [(role, content), ...] ending with a user message
        (`check_conversation`): each message's header, its stripped content and <|eot_id|>, the
        default system message first when there is none, then the assistant's header. One user
        message gives `encode`'s ids (for a message without surrounding whitespace)."""
        messages = check_conversation(messages)
        if messages[0][0] != "system":
            messages = [("system", self.default_system)] + messages
        ids = [self.tok.bos_id]
        for role, content in messages:
            ids += self.encode_header(role) + self.tok.encode(content.strip()) + [self.tok.eot_id]
        return ids + self.encode_header("assistant")

    def decode(self, ids) -> str:
        return self.tok.decode(ids)
