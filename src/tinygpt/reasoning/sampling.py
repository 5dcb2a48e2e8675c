"""Generating from a model for the reasoning methods: greedy or sampled (temperature, top-p),
stopping at end tokens, through tinygpt's KV-cached `generate_stream`; several samples of one
prompt at once (`sample_responses`, `generate_texts`) through `tinygpt.model.generate_batched`,
which decodes them together on Qwen3/Llama 3 (one at a time on GPT-2).

Temperature 0 is greedy decoding here, as everywhere in tinygpt (the reference's samplers skip the
division at 0 and sample at temperature 1)."""
import numpy as np

from ..errors import InputError
from ..model.batched import generate_batched
from ..model.generate import generate_stream


def generate_ids(model, prompt_ids, max_new_tokens: int, stop_ids=(), temperature: float = 0.0,
                 top_p=None, context_length=None, keep_stop: bool = False) -> list:
    """The token ids the model writes after `prompt_ids` (a list), up to `max_new_tokens`; it stops
    at the first of `stop_ids`, which is left out (kept at the end with `keep_stop`).
    `context_length` defaults to the model's."""
    ids = np.asarray(prompt_ids, dtype=np.int64).reshape(1, -1)  # (1, n)
    context = context_length or model.cfg["context_length"]
    if ids.shape[1] >= context:
        raise InputError(f"the prompt is {ids.shape[1]} tokens, as long as the model's context "
                         f"({context}): nothing is left to answer in")
    # the KV cache holds no more than this answer needs (a 40k context would take gigabytes)
    window = min(context, ids.shape[1] + max_new_tokens)
    out = []
    for token in generate_stream(model, ids, max_new_tokens, window, temperature=temperature,
                                 top_p=top_p):
        token = int(token[0, 0])  # (1, 1) -> the new id
        if token in stop_ids:
            out += [token] * keep_stop
            break
        out.append(token)
    return out


def _stops(tokenizer):
    eos = getattr(tokenizer, "eos_token_id", None)
    return () if eos is None else (eos,)


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 512,
                  temperature: float = 0.0, top_p=None) -> str:
    """The text the model writes after `prompt` (encoded with `tokenizer.encode`), stopped at
    `tokenizer.eos_token_id` (left out)."""
    new = generate_ids(model, tokenizer.encode(prompt), max_new_tokens, _stops(tokenizer),
                       temperature, top_p)
    return tokenizer.decode(new)


def sample_response(model, tokenizer, prompt: str, max_new_tokens: int = 512,
                    temperature: float = 0.8, top_p=0.9):
    """One rollout (the sequel's chapter 6): (token ids of prompt + response as an int64 ndarray,
    the prompt's length, the response text). The end token, when reached, is kept in both, so
    that RL learns to stop."""
    prompt_ids = list(tokenizer.encode(prompt))
    new = generate_ids(model, prompt_ids, max_new_tokens, _stops(tokenizer), temperature, top_p,
                       keep_stop=True)
    return np.asarray(prompt_ids + new, dtype=np.int64), len(prompt_ids), tokenizer.decode(new)


def generate_texts(model, tokenizer, prompt: str, n: int, max_new_tokens: int = 512,
                   temperature: float = 0.8, top_p=0.9) -> list:
    """`n` texts the model writes after `prompt`, decoded together (see the module docstring),
    each stopped at `tokenizer.eos_token_id` (left out)."""
    prompt_ids = list(tokenizer.encode(prompt))
    new = generate_batched(model, [prompt_ids] * n, max_new_tokens, _stops(tokenizer),
                           temperature, top_p)
    return [tokenizer.decode(ids) for ids in new]


def sample_responses(model, tokenizer, prompt: str, n: int, max_new_tokens: int = 512,
                     temperature: float = 0.8, top_p=0.9) -> list:
    """`n` rollouts of `prompt` decoded together: a list of what `sample_response` returns
    (ids of prompt + response with the end token kept, the prompt's length, the text)."""
    prompt_ids = list(tokenizer.encode(prompt))
    new = generate_batched(model, [prompt_ids] * n, max_new_tokens, _stops(tokenizer),
                           temperature, top_p, keep_stop=True)
    return [(np.asarray(prompt_ids + ids, dtype=np.int64), len(prompt_ids), tokenizer.decode(ids))
            for ids in new]
