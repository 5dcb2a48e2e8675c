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

The Think models (Olmo-3-7B-Think, Olmo-3-32B-Think, Olmo-3.1-32B-Think) use the same ChatML
turns, but their generation prompt opens the reasoning, `<|im_start|>assistant\\n<think>`, so
the model writes its reasoning, closes it with `</think>`, then answers; and each release has
its own default system turn (32B-Think: "You are a helpful AI assistant."; 3.1-32B-Think: "You
are Olmo, a helpful AI assistant built by Ai2. ..."). Which form a folder's template is, and the
Think default system prompt, are read from the template itself (`olmo3_chat_form`). The Think
template keeps an earlier assistant turn whole, reasoning included (it strips nothing, unlike
Qwen3's, which drops the <think> block of earlier turns).

A conversation (`conversation_prompt`), in either form, is the system turn, then
`<|im_start|>{role}\\n{content}<|im_end|>\\n` per user and assistant message in order, then
the generation prompt. The system turn is the form's default when the conversation has no system
message; a given system message is followed by " You do not currently have access to any
functions. <functions></functions>" (both templates add it when a system message names no
functions; ollama's Think renderer does too, its Instruct renderer does not).

Sources read for the format (nothing copied beyond the special strings and system prompts):
allenai/open-instruct `open_instruct/dataset_transformation.py` (its `olmo` and `olmo_thinker*`
templates) and its docs page on Olmo 3's tokenizer settings
(allenai.github.io/open-instruct/olmo3: which template each release uses); ollama/ollama `model/renderers/olmo3.go`,
`model/renderers/olmo3_think.go` and `model/renderers/olmo3_thinking.go`.
"""
import json
import re
from pathlib import Path
from typing import NamedTuple

from ..errors import InputError
from .qwen3 import HFFileTokenizer, check_conversation, load_hf_tokenizer

ENDOFTEXT, IM_START, IM_END, PAD = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"
THINK = "<think>"  # BPE text: no token of its own in Olmo 3 (open-instruct issue #1869)
OLMO3_SYSTEM_PROMPT = ("You are a helpful function-calling AI assistant. You do not currently "
                       "have access to any functions. <functions></functions>")
# what the templates add after a given system message that names no functions
NO_FUNCTIONS = " You do not currently have access to any functions. <functions></functions>"


class Olmo3Tokenizer(HFFileTokenizer):
    """Text <-> Olmo 3 token ids. `encode(text)` wraps `text` as one user turn (after the system
    turn `system_prompt`) when `apply_chat_template` (override per call with `chat_wrapped`),
    the assistant header then ending in <think> when `think` (a Think model's template);
    `decode` keeps special tokens. `eos_token_id`: <|im_end|> for a chat, <|endoftext|> for a base
    model's text (apply_chat_template=False); `pad_token_id`: <|pad|> (or <|endoftext|>)."""

    def __init__(self, tokenizer_file_path="tokenizer.json", apply_chat_template=True,
                 add_generation_prompt=True, system_prompt=OLMO3_SYSTEM_PROMPT,
                 think=False):
        self.apply_chat_template, self.think = apply_chat_template, think
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
            text += f"{IM_START}assistant\n" + THINK * self.think
        return text

    def conversation_prompt(self, messages) -> str:
        """The system turn (the given system message and NO_FUNCTIONS, else `system_prompt`), the
        ChatML turns of `messages` [(role, content), ...] whole (a Think model's reasoning
        included), and the generation prompt (ending in <think> when `think`), as text."""
        messages = check_conversation(messages)
        system = self.system_prompt
        if messages[0][0] == "system":
            system, messages = messages[0][1] + NO_FUNCTIONS, messages[1:]
        text = f"{IM_START}system\n{system}{IM_END}\n"
        for role, content in messages:
            text += f"{IM_START}{role}\n{content}{IM_END}\n"
        return text + f"{IM_START}assistant\n" + THINK * self.think


class Olmo3ChatForm(NamedTuple):
    """Which of Olmo 3's chat templates a folder holds: `think` (a Think model's), the default
    `system_prompt` to use, and `note`, "" for a known form, else why the Instruct form is
    assumed (said in the CLI's one-line style note)."""
    think: bool
    system_prompt: str
    note: str


# a string literal of a Jinja template, and the one printed first after a test of
# add_generation_prompt / of "not has_system" (the open-instruct and Hugging Face templates' shape)
_LITERAL = r"""\{\{-?\s*(?P<q>['"])(?P<text>(?:\\.|(?!(?P=q)).)*)(?P=q)\s*-?\}\}"""
_GENERATION = re.compile(r"add_generation_prompt\s*-?%\}\s*" + _LITERAL, re.S)
_DEFAULT_SYSTEM = re.compile(r"if\s+not\s+has_system\s*-?%\}\s*" + _LITERAL, re.S)


def _unescape(literal: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), literal, flags=re.S)


def read_chat_template(folder):
    """The chat template text of a Hugging Face folder: chat_template.jinja if there is one (as
    transformers prefers it), else tokenizer_config.json's "chat_template" (a string, or a list of
    named templates whose "default" one is used); None when the folder has neither."""
    folder = Path(folder)
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        try:
            return jinja.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{jinja} is not a chat template (UTF-8 text): {err}") from None
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return None
    try:
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
    except (ValueError, AttributeError) as err:  # not JSON, or JSON but not an object
        raise InputError(f"{config} is not a tokenizer config (a JSON object): {err}") from None
    if isinstance(template, list):
        template = next((t.get("template") for t in template
                         if isinstance(t, dict) and t.get("name") == "default"), None)
    return template if isinstance(template, str) else None


def olmo3_chat_form(folder) -> Olmo3ChatForm:
    """Think or Instruct, from the folder's chat template (`read_chat_template`), never from its
    name. Checked: the literal the template prints right after its add_generation_prompt test is
    `<|im_start|>assistant\\n<think>` (Think) or `<|im_start|>assistant\\n` (Instruct); a Think
    template must also print its default system turn as one literal `<|im_start|>system\\n
    {prompt}<|im_end|>\\n` after its "not has_system" test, and that {prompt} is used (7B-Think,
    32B-Think and 3.1-32B-Think each have their own). An Instruct template keeps today's
    OLMO3_SYSTEM_PROMPT. No template, or one of neither form: the Instruct form, with a note."""
    template = read_chat_template(folder)
    if template is None:
        return Olmo3ChatForm(False, OLMO3_SYSTEM_PROMPT, "no chat template found in the folder")
    generation = _GENERATION.search(template)
    prompt = _unescape(generation["text"]) if generation else None
    system = _DEFAULT_SYSTEM.search(template)
    system = _unescape(system["text"]) if system else ""
    head, tail = f"{IM_START}system\n", f"{IM_END}\n"
    if (prompt == f"{IM_START}assistant\n{THINK}" and system.startswith(head)
            and system.endswith(tail)):
        return Olmo3ChatForm(True, system[len(head):-len(tail)], "")
    if prompt == f"{IM_START}assistant\n":
        return Olmo3ChatForm(False, OLMO3_SYSTEM_PROMPT, "")
    return Olmo3ChatForm(False, OLMO3_SYSTEM_PROMPT,
                         "the folder's chat template is neither Olmo 3 form known here")
