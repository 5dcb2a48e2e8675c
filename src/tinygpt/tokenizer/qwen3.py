"""Qwen3's tokenizer, named and shaped as the book's `llms_from_scratch.qwen3.Qwen3Tokenizer`.

Qwen3 ships its byte-level BPE as a Hugging Face `tokenizer.json`; like the book we read it with
Hugging Face's `tokenizers` library (an optional dependency, imported when a tokenizer is made).
Special tokens (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, `<think>`, `</think>`, ...) are
cut out of the text first and mapped to their ids, so a user's text can never be split into
their pieces. The chat template is Qwen's ChatML:

    <|im_start|>user\\n{message}<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n

where the assistant header is added only with `add_generation_prompt`, and the empty
`<think>` block only when thinking is off (Qwen3's `enable_thinking=False`).

A conversation (`conversation_prompt`) is the same ChatML turns in order: a system message first
if there is one, then `<|im_start|>{role}\\n{content}<|im_end|>\\n` per user and assistant
message, then the generation prompt. Of an earlier assistant turn only the answer is kept: the
text after its last `</think>`, leading newlines stripped, as Qwen3's template does for every
assistant turn before the last user message. Source read for the format (nothing copied beyond
the special strings): Qwen3's Hugging Face chat template (tokenizer_config.json of
Qwen/Qwen3-8B, as reproduced in SkyRL's `skyrl_train/utils/templates/README.md` and BioReason's
`chat_template_dl.py`).
"""
import re
from pathlib import Path

from ..errors import InputError
from .pretokenize import check_ids, check_text

ENDOFTEXT, IM_START, IM_END, THINK, END_THINK = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
QWEN3_SPECIALS = (ENDOFTEXT, IM_START, IM_END,
                  "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
                  "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", THINK, END_THINK)
_SPECIAL_SPLIT = re.compile(r"(<\|[^>]+?\|>|<think>|</think>)")
ROLES = ("system", "user", "assistant")


def check_conversation(messages) -> list:
    """`messages` as a list of (role, content) pairs, checked as every family's chat format needs
    them: roles system / user / assistant, a system message only first, str contents, and the
    last message the user's (the one to answer). InputError names the first problem."""
    messages = list(messages)
    if not all(isinstance(m, (tuple, list)) and len(m) == 2 for m in messages):
        raise InputError("a conversation is a list of (role, content) pairs")
    messages = [(role, content) for role, content in messages]
    if not messages:
        raise InputError("the conversation holds no message")
    for i, (role, content) in enumerate(messages):
        if role not in ROLES:
            raise InputError(f"message {i} has the role {role!r}: the roles are system, user "
                             "and assistant")
        if not isinstance(content, str):
            raise InputError(f"message {i}'s content is a {type(content).__name__}, not text")
        if role == "system" and i > 0:
            raise InputError(f"message {i} is a system message: only the first message may be one")
    if messages[-1][0] != "user":
        raise InputError(f"the last message is the {messages[-1][0]}'s: a conversation to answer "
                         "ends with a user message")
    return messages


def load_hf_tokenizer(path):
    """A `tokenizers.Tokenizer` read from the tokenizer.json at `path`; InputError names the
    file when it is missing or unreadable, or the library when it is not installed."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise InputError("Qwen3's tokenizer needs Hugging Face's `tokenizers` library: "
                         "pip install tokenizers") from None
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such tokenizer file (a Hugging Face tokenizer.json)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own Exception type for a malformed file
        raise InputError(f"{path} is not a Hugging Face tokenizer.json: {e}") from None


class HFFileTokenizer:
    """What a tokenizer read from a Hugging Face tokenizer.json with the `tokenizers` library
    shares (Qwen3Tokenizer here, Gemma3Tokenizer in gemma3.py): its special tokens, the
    vocabulary size, encoding around the specials, and decoding. A subclass sets `_tok`,
    `_special_to_id`, `_special_split` (a regex with one group matching its specials),
    `apply_chat_template`, `chat_prompt` and `conversation_prompt`."""

    @property
    def special_tokens(self) -> dict:
        """{special token: id} of the specials this tokenizer file holds."""
        return dict(self._special_to_id)

    @property
    def n_vocab(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, chat_wrapped=None) -> list:
        """Token ids of `text` (wrapped as a user turn if `chat_wrapped`, default
        `apply_chat_template`). A text that is one special token alone is that token's id."""
        if not isinstance(text, str):
            raise InputError(f"{type(self).__name__}.encode takes a str, got {type(text).__name__}")
        check_text(text)  # the library's TypeError for a lone surrogate would name no cause
        stripped = text.strip()
        if stripped in self._special_to_id and "\n" not in stripped:
            return [self._special_to_id[stripped]]
        if self.apply_chat_template if chat_wrapped is None else chat_wrapped:
            text = self.chat_prompt(text)
        ids = []
        for part in filter(None, self._special_split.split(text)):
            if part in self._special_to_id:
                ids.append(self._special_to_id[part])
            else:  # ordinary text: the BPE alone (no added tokens can hide in it now)
                ids.extend(self._tok.encode(part, add_special_tokens=False).ids)
        return ids

    def encode_conversation(self, messages) -> list:
        """Token ids of the prompt for `messages` [(role, content), ...] (`conversation_prompt`),
        ending with the generation prompt."""
        return self.encode(self.conversation_prompt(messages), chat_wrapped=False)

    def decode(self, ids) -> str:
        # the library would drop unknown ids silently
        ids = check_ids(ids, self.n_vocab, f"{type(self).__name__}.decode")
        return self._tok.decode(ids, skip_special_tokens=False)


class Qwen3Tokenizer(HFFileTokenizer):
    """Text <-> Qwen3 token ids. `encode(text)` wraps `text` as one user turn when
    `apply_chat_template` (override per call with `chat_wrapped`); `decode` keeps special tokens.
    `eos_token_id` is `<|im_end|>` for a chat model and `<|endoftext|>` for a base model
    (`repo_id` ending in "-Base", or `apply_chat_template=False` when no repo_id is given);
    `pad_token_id` is `<|endoftext|>`. Unlike the book, `repo_id` only picks the end token:
    downloading is `tinygpt.weights.load_pretrained`'s job."""

    def __init__(self, tokenizer_file_path="tokenizer.json", apply_chat_template=True,
                 add_generation_prompt=False, add_thinking=False, *, repo_id=None):
        self.apply_chat_template = apply_chat_template
        self.add_generation_prompt = add_generation_prompt
        self.add_thinking = add_thinking
        self._tok = load_hf_tokenizer(tokenizer_file_path)
        self._special_split = _SPECIAL_SPLIT
        self._special_to_id = {t: i for t in QWEN3_SPECIALS
                               if (i := self._tok.token_to_id(t)) is not None}
        if ENDOFTEXT not in self._special_to_id:
            raise InputError(f"{tokenizer_file_path}: has no {ENDOFTEXT} token, so it is not "
                             f"a Qwen3 tokenizer")
        self.pad_token_id = self._special_to_id[ENDOFTEXT]
        chat_model = "Base" not in repo_id if repo_id else apply_chat_template
        self.eos_token_id = self._special_to_id.get(IM_END if chat_model else ENDOFTEXT,
                                                    self.pad_token_id)

    def chat_prompt(self, user_message: str) -> str:
        """The chat template around one user message, as text (special tokens spelled out)."""
        text = f"{IM_START}user\n{user_message}{IM_END}\n"
        if self.add_generation_prompt:
            text += f"{IM_START}assistant\n"
            if not self.add_thinking:
                text += f"{THINK}\n\n{END_THINK}\n\n"
        return text

    def conversation_prompt(self, messages) -> str:
        """The ChatML turns of `messages` [(role, content), ...] and the generation prompt (with
        the empty <think> block when thinking is off), as text; an earlier assistant turn keeps
        its answer only (its <think>...</think> reasoning dropped, as Qwen3's template does)."""
        text = ""
        for role, content in check_conversation(messages):
            if role == "assistant" and END_THINK in content:
                content = content.split(END_THINK)[-1].lstrip("\n")
            text += f"{IM_START}{role}\n{content}{IM_END}\n"
        text += f"{IM_START}assistant\n"
        return text if self.add_thinking else text + f"{THINK}\n\n{END_THINK}\n\n"
