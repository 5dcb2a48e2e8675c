"""Which model a command means: a tinygpt checkpoint, a folder holding one, GPT-2 weights, or a
Hugging Face model (a folder or a Hub name) of a family tinygpt reads (Qwen3, Qwen3 MoE, Llama 3,
Gemma 3, Olmo 3) with its own tokenizer and chat format. Every model returned here is for
generating, so each passes through `tinygpt.model.for_inference`, and a Hugging Face model whose
vocabulary has more rows than its tokenizer has ids (Qwen3: 151,936 rows, 151,669 ids) never
chooses an id its tokenizer cannot decode (`mask_undecodable`)."""
import pathlib

from ..errors import InputError
from ..model import for_inference

CHECKPOINT_FILE = "model.safetensors"


def load_model(source):
    """-> (GPTModel in eval mode, readied by for_inference, its config) from `source`: a tinygpt
    checkpoint written by pretrain or finetune-instruct (the file, or the folder holding
    `model.safetensors`), a Hugging Face GPT-2 folder or file, a `.pth` state dict, or a GPT-2
    size name."""
    path = pathlib.Path(source)
    if path.is_dir() and _is_checkpoint(path / CHECKPOINT_FILE):
        path = path / CHECKPOINT_FILE
    if path.is_dir() and (path / "classifier.safetensors").is_file():
        raise InputError(f"{source} holds a spam classifier (chapter 6), which labels messages "
                         "rather than writing text: use `tinygpt classify --model " f"{source}`")
    if path.is_file() and _is_checkpoint(path):
        return _from_checkpoint(path)
    from ..weights import load_gpt2
    model = for_inference(load_gpt2(str(source))).eval()
    return model, model.cfg


def _is_checkpoint(path: pathlib.Path) -> bool:
    if not path.is_file() or path.suffix != ".safetensors":
        return False
    from ..weights.safetensors_io import read_header
    _, metadata, _ = read_header(path)
    return metadata.get("format") == "tinygpt-checkpoint"


def _from_checkpoint(path: pathlib.Path):
    from ..train.checkpoint import load_model
    model, state = load_model(path)  # the model's tensors only, after checking its config
    if state.get("kind") == "classifier":
        raise InputError(f"{path} is a spam classifier (chapter 6), which labels messages rather "
                         f"than writing text: use `tinygpt classify --model {path}`")
    return for_inference(model).eval(), state["config"]


class TextModel:
    """A model with what it takes to talk to it: `prompt_ids(text)` (its chat template when
    `chat`, else the plain text), `conversation_ids(messages)` (a conversation in its chat
    template), `tokenizer.decode`, `stop_ids` (the end tokens generation stops at),
    `context_length`, and `style` naming the prompt format for the user. `reply_opening`: text
    the prompt ends with that belongs to the reply, shown before it (Olmo 3 Think's <think>).
    `multi_turn`: whether its chat format holds a conversation (`dialog_ids` given: the Hugging
    Face families), or only one message (GPT-2 and tinygpt checkpoints, chapter 7's Alpaca)."""

    def __init__(self, model, context_length, tokenizer, prompt_ids, stop_ids, style,
                 reply_opening="", dialog_ids=None):
        self.model, self.context_length, self.tokenizer = model, context_length, tokenizer
        self.prompt_ids, self.stop_ids, self.style = prompt_ids, tuple(stop_ids), style
        self.reply_opening, self._dialog_ids = reply_opening, dialog_ids
        self.multi_turn = dialog_ids is not None

    def conversation_ids(self, messages) -> list:
        """Prompt ids of `messages`, [(role, content), ...] with roles system / user / assistant
        ending with the user message to answer (InputError otherwise), in the model's chat
        format. A model without a multi-turn format answers the last message alone, as
        `prompt_ids` would."""
        from ..tokenizer.qwen3 import check_conversation
        messages = check_conversation(messages)
        if not self.multi_turn:
            return self.prompt_ids(messages[-1][1])
        return self._dialog_ids(messages)


def load_text_model(source, chat: bool, thinking: bool = False, dtype=None, quantize=None) -> TextModel:
    """`source` as a TextModel: a Hugging Face model of a family in HF_FAMILIES (a folder with its
    tokenizer files, or a Hub name such as Qwen/Qwen3-0.6B, downloaded once) talks through its own
    tokenizer and chat template; a GPT-2 or tinygpt checkpoint (`load_model`) through GPT-2's
    tokenizer and, in a chat, chapter 7's Alpaca prompt. `thinking` lets Qwen3 think first (its
    template's empty <think></think> block is left out). dtype="bf16" / quantize="q8": the weights
    kept as bf16 or 8-bit (tinygpt.quant; Qwen3/Llama read straight into that form, GPT-2 and
    tinygpt checkpoints quantized once loaded)."""
    from ..quant import quantize as quantize_model, weights_format
    fmt = weights_format(dtype, quantize)
    folder = _hf_folder(source)
    if folder is None:
        from ..tokenizer import ENDOFTEXT, get_gpt2_tokenizer
        from ..tokenizer.gpt2 import GPT2_SPECIAL_TOKENS
        from .inference import alpaca_prompt
        model, cfg = load_model(source)
        model = model if fmt is None else quantize_model(model, fmt)
        tokenizer = get_gpt2_tokenizer()

        def gpt2_ids(text):
            return tokenizer.encode(alpaca_prompt(text.strip()) if chat else text,
                                    allowed_special={ENDOFTEXT})
        return TextModel(model, cfg["context_length"], tokenizer, gpt2_ids,  # one message only
                         [GPT2_SPECIAL_TOKENS[ENDOFTEXT]], "the Alpaca format of chapter 7")
    from ..weights import load_pretrained
    model = for_inference(load_pretrained(folder, dtype=dtype or "float32", quantize=quantize)).eval()
    family = HF_FAMILIES[_model_type(folder)]
    options = {"thinking": thinking} if family is _qwen3 else {}  # Qwen3's <think> switch
    text_model = family(model, folder, chat, **options)
    tokenizer = text_model.tokenizer  # the ids it decodes (Llama 3's keeps the book's name n_words)
    mask_undecodable(text_model.model, getattr(tokenizer, "n_vocab", None) or tokenizer.n_words)
    return text_model


def mask_undecodable(model, n_ids: int) -> None:
    """Make `model` never choose an id >= `n_ids` (the ids its tokenizer decodes): a forward hook
    fills those logits with the dtype's lowest finite value halved, before any greedy or sampled
    choice (`tinygpt generate`, `chat`, `serve` all decode through `generate_stream`). In effect the
    -inf of a masked logit: its softmax weight exp(lowest - max) is 0 and it is never the argmax;
    finite, because generation refuses non-finite logits as a broken model's sign, and halved, so
    subtracting a row's maximum cannot overflow it to -inf. Nothing is hooked when the vocabulary
    has no extra rows."""
    import numpy as np
    from ..ops import masked_fill
    vocab = model.cfg["vocab_size"]
    if vocab <= n_ids:
        return
    beyond = np.arange(vocab) >= n_ids                   # (vocab,), True for undecodable ids

    def mask(module, inputs, logits):                    # logits (b, T, vocab)
        return masked_fill(logits, beyond, float(np.finfo(logits.dtype).min) / 2)
    model.register_forward_hook(mask)


def _hf_folder(source):
    """The Hugging Face folder `source` names (downloading a Hub name once), if it holds a model of
    a family in HF_FAMILIES; None for anything `load_model` reads (GPT-2, tinygpt checkpoints)."""
    from ..weights import download_model, is_repo_id, resolve_model_name
    path = pathlib.Path(source)
    if not path.exists():
        if resolve_model_name(source) is not None or not is_repo_id(source):
            return None
        from ..data.download import DownloadError
        from ..weights.hub import AccessRefusedError
        try:
            path = download_model(source)
        except AccessRefusedError:
            raise
        except DownloadError as err:  # a mistyped local folder looks like a Hub name too
            raise DownloadError(f"{source} is no local file or folder, and as a Hugging Face "
                                f"Hub name it could not be fetched: {err}") from None
    if path.is_dir() and (path / "config.json").is_file() and _model_type(path) in HF_FAMILIES:
        return path
    return None


def _model_type(folder: pathlib.Path):
    from ..weights.gpt2 import read_json_config
    return read_json_config(folder / "config.json").get("model_type")


def _need(folder: pathlib.Path, *names) -> pathlib.Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{folder} holds no tokenizer file ({' or '.join(names)}): the model's own "
                     f"tokenizer is needed to talk to it")


def _qwen3(model, folder, chat, thinking) -> TextModel:
    from ..tokenizer import Qwen3Tokenizer
    tokenizer = Qwen3Tokenizer(_need(folder, "tokenizer.json"), apply_chat_template=chat,
                               add_generation_prompt=chat, add_thinking=thinking)
    stops = [tokenizer.eos_token_id] + [tokenizer.pad_token_id] * chat  # <|im_end|>, <|endoftext|>
    return TextModel(model, model.cfg["context_length"], tokenizer, tokenizer.encode, stops,
                     f"Qwen3's chat template, thinking {'on' if thinking else 'off'}",
                     dialog_ids=tokenizer.encode_conversation if chat else None)


def _llama3(model, folder, chat) -> TextModel:
    from ..tokenizer import ChatFormat, Llama3Tokenizer
    tokenizer = Llama3Tokenizer(_need(folder, "original/tokenizer.model", "tokenizer.model"))
    chat_format = ChatFormat(tokenizer)
    prompt_ids = chat_format.encode if chat else (lambda text: tokenizer.encode(text, bos=True))
    stops = [tokenizer.eot_id, tokenizer.eos_id] if chat else [tokenizer.eos_id]
    return TextModel(model, model.cfg["context_length"], tokenizer, prompt_ids, stops,
                     "Llama 3's chat format", dialog_ids=chat_format.encode_dialog if chat else None)


def _gemma3(model, folder, chat) -> TextModel:
    from ..tokenizer import Gemma3Tokenizer
    tokenizer = Gemma3Tokenizer(_need(folder, "tokenizer.json"), apply_chat_template=chat)
    eos = tokenizer.special_tokens["<eos>"]
    stops = [tokenizer.eos_token_id, eos] if chat else [eos]  # <end_of_turn>, <eos>
    return TextModel(model, model.cfg["context_length"], tokenizer, tokenizer.encode, stops,
                     "Gemma 3's chat template",
                     dialog_ids=tokenizer.encode_conversation if chat else None)


def _olmo3(model, folder, chat) -> TextModel:
    """Instruct or Think from the folder's chat template (olmo3_chat_form), never its name: a
    Think model's prompt ends inside <think>, so its reply is its reasoning, </think>, then the
    answer, all shown as it comes."""
    from ..tokenizer import Olmo3Tokenizer
    from ..tokenizer.olmo3 import OLMO3_SYSTEM_PROMPT, Olmo3ChatForm, olmo3_chat_form
    form = olmo3_chat_form(folder) if chat else Olmo3ChatForm(False, OLMO3_SYSTEM_PROMPT, "")
    tokenizer = Olmo3Tokenizer(_need(folder, "tokenizer.json"), apply_chat_template=chat,
                               system_prompt=form.system_prompt, think=form.think)
    stops = [tokenizer.eos_token_id, tokenizer.endoftext_id] if chat else [tokenizer.endoftext_id]
    style = ("Olmo 3 Think's chat template (the reply opens in <think>: its reasoning, </think>, "
             "then its answer)" if form.think else "Olmo 3's chat template")
    style += f" (Instruct form: {form.note})" if form.note else ""
    return TextModel(model, model.cfg["context_length"], tokenizer, tokenizer.encode, stops, style,
                     reply_opening="<think>" if form.think else "",
                     dialog_ids=tokenizer.encode_conversation if chat else None)


# config.json's model_type -> the function pairing such a model with its tokenizer and template
HF_FAMILIES = {"qwen3": _qwen3, "qwen3_moe": _qwen3, "llama": _llama3, "gemma3": _gemma3,
               "gemma3_text": _gemma3, "olmo3": _olmo3}
