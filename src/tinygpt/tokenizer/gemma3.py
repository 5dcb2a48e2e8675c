"""Gemma 3's tokenizer, shaped as the book's `GemmaTokenizer` of `ch05/12_gemma3` and read, like
Qwen3Tokenizer (qwen3.py), from the model's Hugging Face `tokenizer.json` with the `tokenizers`
library. Gemma's vocabulary is a SentencePiece-style BPE (spaces written as "▁", bytes as
<0x..> fallbacks) of 262,144 entries; the file's own normalizer and decoder handle both.

Special tokens (`<bos>`, `<eos>`, `<pad>`, `<start_of_turn>`, `<end_of_turn>`) are cut out of the
text first and mapped to their ids, so a user's text is never split into their pieces. Every
encoded text starts with `<bos>`, as the model was trained. The chat template is Gemma's:

    <bos><start_of_turn>user\\n{message}<end_of_turn>\\n<start_of_turn>model\\n

where the model's header is added only with `add_generation_prompt` (the default here, as the
book's `apply_chat_template` always adds it). A chat turn ends with <end_of_turn>, so that is
`eos_token_id` for a chat model; a base model (apply_chat_template=False) ends with <eos>.

A conversation (`conversation_prompt`) alternates user and model turns, starting with the user's,
each `<start_of_turn>{user|model}\\n{content stripped}<end_of_turn>\\n`, then the model's
header. Gemma 3 has no system turn: a system message is put at the start of the first user turn,
followed by a blank line. A conversation whose turns do not alternate is refused, as Gemma 3's
template refuses it. Sources read for the format (nothing copied beyond the special strings):
the chat template of google/gemma-3-*-it (tokenizer_config.json: its `first_user_prefix`,
`| trim` and "Conversation roles must alternate") and Google's "Gemma formatting and system
instructions" page (ai.google.dev/gemma/docs/core/prompt-structure).
"""
import re

from ..errors import InputError

from .qwen3 import HFFileTokenizer, check_conversation, load_hf_tokenizer

BOS, EOS, PAD, START_OF_TURN, END_OF_TURN = (
    "<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>")
GEMMA3_SPECIALS = (PAD, EOS, BOS, START_OF_TURN, END_OF_TURN)
_SPECIAL_SPLIT = re.compile("(" + "|".join(map(re.escape, GEMMA3_SPECIALS)) + ")")


class Gemma3Tokenizer(HFFileTokenizer):
    """Text <-> Gemma 3 token ids. `encode(text)` gives <bos> and then `text`, wrapped as one user
    turn when `apply_chat_template` (override per call with `chat_wrapped`); `decode` keeps
    special tokens. `eos_token_id`: <end_of_turn> for a chat model, <eos> for a base model;
    `pad_token_id`: <pad>."""

    def __init__(self, tokenizer_file_path="tokenizer.json", apply_chat_template=True,
                 add_generation_prompt=True):
        self.apply_chat_template = apply_chat_template
        self.add_generation_prompt = add_generation_prompt
        self._tok = load_hf_tokenizer(tokenizer_file_path)
        self._special_split = _SPECIAL_SPLIT
        self._special_to_id = {t: i for t in GEMMA3_SPECIALS
                               if (i := self._tok.token_to_id(t)) is not None}
        lacking = [t for t in (BOS, EOS, PAD) if t not in self._special_to_id]
        if lacking:
            raise InputError(f"{tokenizer_file_path}: has no {', '.join(lacking)} token, so it is "
                             f"not a Gemma tokenizer")
        self.bos_token_id = self._special_to_id[BOS]
        self.pad_token_id = self._special_to_id[PAD]
        self.eos_token_id = self._special_to_id.get(END_OF_TURN if apply_chat_template else EOS,
                                                    self._special_to_id[EOS])

    def encode(self, text: str, chat_wrapped=None) -> list:
        """<bos> and the token ids of `text` (wrapped as a user turn if `chat_wrapped`, default
        `apply_chat_template`). A text that is one special token alone is that token's id."""
        ids = super().encode(text, chat_wrapped)
        if len(ids) == 1 and text.strip() in self._special_to_id and "\n" not in text.strip():
            return ids
        return [self.bos_token_id] + ids

    def chat_prompt(self, user_message: str) -> str:
        """The chat template around one user message, as text (special tokens spelled out; the
        leading <bos> is added by `encode`)."""
        text = f"{START_OF_TURN}user\n{user_message}{END_OF_TURN}\n"
        if self.add_generation_prompt:
            text += f"{START_OF_TURN}model\n"
        return text

    def conversation_prompt(self, messages) -> str:
        """Gemma 3's user / model turns of `messages` [(role, content), ...] and the model's
        header, as text (the leading <bos> is added by `encode`); a system message opens the
        first user turn. InputError when the turns do not alternate user, model, user, ..."""
        messages, prefix = check_conversation(messages), ""
        if messages[0][0] == "system":
            prefix, messages = messages[0][1] + "\n\n", messages[1:]
        text = ""
        for i, (role, content) in enumerate(messages):
            if (role == "user") != (i % 2 == 0):
                raise InputError(f"Gemma 3's turns must alternate user, assistant, user, ...: "
                                 f"message {i + bool(prefix)} is another {role} message")
            text += (f"{START_OF_TURN}{'model' if role == 'assistant' else 'user'}\n"
                     f"{prefix if i == 0 else ''}{content.strip()}{END_OF_TURN}\n")
        return text + f"{START_OF_TURN}model\n"
