"""Olmo 3's tokenizer (Ai2's "dolma2" tokenizer), read like Qwen3Tokenizer (qwen3.py) from the
model's Hugging Face `tokenizer.json` with the `tokenizers` library. It is a byte-level BPE in
the GPT-2 / tiktoken style (cl100k's word-splitting regex, then bytes as GPT-2's printable
characters) of 100,278 ids, its last ones special: `<|endoftext|>` (100257), `<|im_start|>`,
`<|im_end|>` (100264, 100265), `<|pad|>` (100277) ...

Special tokens are the file's added tokens marked special, read from the file rather than listed
here; they are cut out of the text first and mapped to their ids, so a user's text is never split
into their pieces. No <bos> is added (Olmo 3's tokenizer_config.json: add_bos_token false).

The chat template is that of the Instruct models (tokenizer_config.json's `chat_template`,
ChatML with a default system turn when the messages hold none):

    <|im_start|>system\\nYou are a helpful function-calling AI assistant. You do not currently
    have access to any functions. <functions></functions><|im_end|>\\n
    <|im_start|>user\\n{message}<|im_end|>\\n<|im_start|>assistant\\n

(one line in fact: the break after "currently" is only for this docstring), the assistant header
added only with `add_generation_prompt`. A turn ends with <|im_end|>, so that is `eos_token_id`
for a chat; a base model's text ends with <|endoftext|> (both are in the Instruct models'
generation_config.json eos_token_id [100265, 100257]).
"""
import re

from ..errors import InputError
from .qwen3 import HFFileTokenizer, load_hf_tokenizer

ENDOFTEXT, IM_START, IM_END, PAD = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"
OLMO3_SYSTEM_PROMPT = ("You are a helpful function-calling AI assistant. You do not currently "
                       "have access to any functions. <functions></functions>")


class Olmo3Tokenizer(HFFileTokenizer):
    """Text <-> Olmo 3 token ids. `encode(text)` wraps `text` as one user turn (after the system
    turn `system_prompt`) when `apply_chat_template` (override per call with `chat_wrapped`);
    `decode` keeps special tokens. `eos_token_id`: <|im_end|> for a chat, <|endoftext|> for a base
    model's text (apply_chat_template=False); `pad_token_id`: <|pad|> (or <|endoftext|>)."""

    def __init__(self, tokenizer_file_path="tokenizer.json", apply_chat_template=True,
                 add_generation_prompt=True, system_prompt=OLMO3_SYSTEM_PROMPT):
        self.apply_chat_template = apply_chat_template
        self.add_generation_prompt = add_generation_prompt
        self.system_prompt = system_prompt
        self._tok = load_hf_tokenizer(tokenizer_file_path)
        self._special_to_id = {token.content: i for i, token in
                               self._tok.get_added_tokens_decoder().items() if token.special}
        needed = (ENDOFTEXT, IM_START, IM_END) if apply_chat_template else (ENDOFTEXT,)
        lacking = [t for t in needed if t not in self._special_to_id]
        if lacking:
            raise InputError(f"{tokenizer_file_path}: has no {', '.join(lacking)} special token, so "
                             f"it is not an Olmo 3 {'chat ' * apply_chat_template}tokenizer")
        # longest first, so a special token that begins another never cuts it short
        names = sorted(self._special_to_id, key=len, reverse=True)
        self._special_split = re.compile("(" + "|".join(map(re.escape, names)) + ")")
        self.pad_token_id = self._special_to_id.get(PAD, self._special_to_id[ENDOFTEXT])
        self.eos_token_id = self._special_to_id[IM_END if apply_chat_template else ENDOFTEXT]
        self.endoftext_id = self._special_to_id[ENDOFTEXT]

    def chat_prompt(self, user_message: str) -> str:
        """The chat template around one user message, as text (special tokens spelled out)."""
        text = (f"{IM_START}system\n{self.system_prompt}{IM_END}\n"
                f"{IM_START}user\n{user_message}{IM_END}\n")
        if self.add_generation_prompt:
            text += f"{IM_START}assistant\n"
        return text
