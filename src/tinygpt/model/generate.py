"""Text generation, book sections 4.7 (`generate_text_simple`) and 5.3 (`generate`), plus the
section-5.1 helpers `text_to_token_ids` / `token_ids_to_text`.

`generate(..., use_cache=True)` keeps a KV cache: the prompt is fed once, then one token per
step, and the cached keys and values of earlier tokens are reused. It produces the same tokens
as `use_cache=False` (the book's loop), for greedy decoding and for seeded sampling alike: both
paths draw from `tinygpt.multinomial` once per step, in the same order.

Past the context window. The book crops the input to its last `context_size` tokens every step
(a sliding window), so once the text is longer than the window every position shifts by one per
step and earlier keys/values no longer apply. The cached path does exactly the same: when its
cache is full it is reset and rebuilt from the last `context_size` tokens, every step from then
on. The tokens stay identical to the uncached path; only the speed falls back to the uncached
rate once the window slides.
"""
import math

import numpy as np

from ..core.autograd import no_grad
from ..core.tensor import Tensor
from ..ops import argmax, topk
from ..ops.sampling import multinomial
from .gpt import GPTModel
from .modern import RotaryModel

# the models whose forward takes (ids, kv_cache=, last_only=) and that build a KV cache
CACHED_MODELS = (GPTModel, RotaryModel)
from ..errors import InputError, InputTypeError


def text_to_token_ids(text: str, tokenizer) -> np.ndarray:
    """Section 5.1.1: encode text (allowing '<|endoftext|>') -> int64 ndarray (1, n)."""
    try:
        ids = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    except TypeError:  # a tokenizer whose encode takes the text only
        ids = tokenizer.encode(text)
    return np.asarray(ids, dtype=np.int64).reshape(1, -1)  # (1, n)


def token_ids_to_text(token_ids, tokenizer) -> str:
    """Section 5.1.1: ids of shape (1, n) or (n,) (ndarray, Tensor or list) -> text."""
    ids = np.asarray(token_ids.data if isinstance(token_ids, Tensor) else token_ids)
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]                                 # (n,)
    if ids.ndim != 1:
        raise InputError(f"token_ids_to_text needs ids of shape (1, n) or (n,), got {ids.shape}")
    return tokenizer.decode([int(i) for i in ids])


def _token_ids(idx):
    """(ids as an int64 ndarray (batch, tokens), whether the caller passed a Tensor)."""
    was_tensor = isinstance(idx, Tensor)
    ids = np.asarray(idx.data if was_tensor else idx)
    if ids.dtype.kind not in "iu" or ids.ndim != 2:
        raise InputError(f"idx must be integer token ids of shape (batch, tokens), got dtype "
                         f"{ids.dtype} and shape {ids.shape} (add a batch axis: idx[None, :])")
    return ids.astype(np.int64), was_tensor


def _check_context_size(model, context_size):
    if not isinstance(context_size, (int, np.integer)) or context_size <= 0:
        raise InputError(f"context_size must be a positive int, got {context_size!r}")
    ctx = getattr(model, "cfg", {}).get("context_length")
    if ctx is not None and context_size > ctx:
        raise InputError(f"context_size {context_size} exceeds the model's context_length {ctx}")


def _check_max_new_tokens(max_new_tokens):
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)):
        raise InputTypeError(f"max_new_tokens must be an int, got {max_new_tokens!r}")
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")


def _check_finite(logits: np.ndarray, model, step: int) -> np.ndarray:
    """Refuse non-finite logits (they would decode to arbitrary tokens), naming the first
    parameter that holds nan or inf when there is one."""
    if np.isfinite(logits).all():
        return logits
    named = getattr(model, "named_parameters", lambda: [])()
    bad = next((name for name, p in named if not np.isfinite(p.data).all()), None)
    cause = (f"its parameter {bad!r} holds nan or inf" if bad is not None else
             "its parameters are finite, so a value overflowed")
    raise InputError(f"generation step {step}: the model produced non-finite logits (nan or inf); "
                     f"{cause}")


def _last_logits(model, ids, kv_cache=None, step: int = 0) -> np.ndarray:
    """Logits of the last position, (batch, vocab) ndarray; non-finite logits are refused."""
    if isinstance(model, CACHED_MODELS):
        logits = model(ids, kv_cache=kv_cache, last_only=True)  # (b, 1, vocab)
    else:
        logits = model(ids)                                      # (b, T, vocab)
    return _check_finite(logits.data[:, -1, :], model, step)    # (b, vocab)


def generate_text_simple(model, idx, max_new_tokens: int, context_size: int):
    """Section 4.7: greedy decoding, the whole (cropped) context recomputed every step.
    idx (batch, n) int ndarray or Tensor -> (batch, n + max_new_tokens), same kind as idx."""
    ids, was_tensor = _token_ids(idx)
    _check_context_size(model, context_size)
    _check_max_new_tokens(max_new_tokens)
    with no_grad():
        for step in range(max_new_tokens):
            idx_cond = ids[:, -context_size:]        # (b, <= context_size)
            logits = model(idx_cond)                 # (b, T, vocab)
            logits = logits[:, -1, :]                # (b, vocab)
            _check_finite(logits.data, model, step)
            probas = logits.softmax(dim=-1)          # (b, vocab)
            idx_next = argmax(probas, dim=-1, keepdim=True).data  # (b, 1)
            ids = np.concatenate([ids, idx_next], axis=1)         # (b, n + 1)
    return Tensor(ids) if was_tensor else ids


def top_p_filter(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Nucleus filtering: keep the most probable tokens whose mass reaches `top_p` of the row's
    total, the rest get weight 0. A token is kept when the tokens ranked above it hold less than
    top_p, so the most probable one always stays. probs (b, vocab), unnormalised, >= 0."""
    order = np.argsort(-probs, axis=-1, kind="stable")         # (b, vocab), most probable first
    ranked = np.take_along_axis(probs, order, axis=-1)         # (b, vocab), descending
    mass_above = np.cumsum(ranked, axis=-1) - ranked           # (b, vocab), of the tokens ranked above
    drop_ranked = mass_above >= top_p * ranked.sum(axis=-1, keepdims=True)
    drop = np.empty_like(drop_ranked)
    np.put_along_axis(drop, order, drop_ranked, axis=-1)       # back to vocabulary order
    return np.where(drop, 0.0, probs)


def _check_top_p(top_p):
    if top_p is None:
        return None
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float, np.floating, np.integer)):
        raise InputTypeError(f"top_p must be a number in (0, 1], got {top_p!r}")
    if not 0.0 < float(top_p) <= 1.0:
        raise InputError(f"top_p must be in (0, 1], got {top_p}")
    return None if float(top_p) == 1.0 else float(top_p)  # 1.0 keeps every token


def _next_token(logits: np.ndarray, temperature: float, top_k, top_p=None) -> np.ndarray:
    """Section 5.3: top-k filter with -inf, temperature scaling, then multinomial sampling
    (temperature > 0) or argmax (temperature 0). logits (b, vocab) -> ids (b, 1).
    `top_p` (beyond the book, as Hugging Face's generate): after temperature, only the nucleus
    of `top_p_filter` can be drawn; greedy decoding is unaffected (the argmax is always kept)."""
    if top_k is not None:
        top_logits, _ = topk(Tensor(logits), top_k)  # (b, k), descending
        min_val = top_logits.data[:, -1:]            # (b, 1)
        logits = np.where(logits < min_val, -np.inf, logits)  # (b, vocab)
    if temperature > 0.0:
        # softmax(logits / temperature), computed so that no temperature overflows it: shifted by
        # the row maximum (softmax is unchanged) and divided in float64, every exponent is <= 0
        # and the largest logit's is 0, so a tiny temperature gives it all the weight (greedy)
        shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)  # (b, vocab) <= 0
        with np.errstate(over="ignore"):             # -inf for a subnormal temperature: weight 0
            probs = np.exp(shifted / temperature)    # (b, vocab), unnormalised
        if top_p is not None:
            probs = top_p_filter(probs, top_p)       # (b, vocab), zero outside the nucleus
        return multinomial(Tensor(probs), num_samples=1).data  # (b, 1)
    return argmax(Tensor(logits), dim=-1, keepdim=True).data  # (b, 1)


def generate(model, idx, max_new_tokens: int, context_size: int, temperature: float = 0.0,
             top_k: int | None = None, eos_id: int | None = None,
             use_cache: bool = True, top_p: float | None = None):
    """Section 5.3: generate up to `max_new_tokens` tokens after `idx` (batch, n).

    temperature 0.0: greedy (argmax); > 0: logits / temperature, softmax, then one draw from
    `tinygpt.multinomial` per step (seed with `tinygpt.manual_seed`); nan, inf and negative
    temperatures are refused. top_k: keep the k largest
    logits, the rest become -inf. top_p: sample only from the most probable tokens holding top_p
    of the probability (nucleus sampling; None or 1.0: all). eos_id: stop before appending the first generated eos_id
    (batch size 1 only, as in the book). use_cache: reuse keys/values through a KV cache
    (GPTModel, Qwen3Model, Llama3Model); identical tokens, see the module docstring for the sliding window.
    The model's train/eval mode is left as it is: call model.eval() first, as the book does.
    Non-finite logits (a model whose weights hold nan or inf, or that overflows) raise
    InputError naming the first non-finite parameter, instead of decoding noise.
    Returns (batch, n + generated) int64, an ndarray or a Tensor like `idx`."""
    ids, was_tensor = _token_ids(idx)
    new = list(generate_stream(model, ids, max_new_tokens, context_size, temperature, top_k,
                               eos_id, use_cache, top_p))
    ids = np.concatenate([ids, *new], axis=1)                         # (b, n + generated)
    return Tensor(ids) if was_tensor else ids


def generate_stream(model, idx, max_new_tokens: int, context_size: int, temperature: float = 0.0,
                    top_k: int | None = None, eos_id: int | None = None, use_cache: bool = True,
                    top_p: float | None = None):
    """`generate`'s loop one token at a time, for showing text as it is made: yields each new
    token as a (batch, 1) int64 ndarray as soon as it is chosen, and stops before a generated
    `eos_id`. Same arguments, checks and tokens as `generate`; no graph is recorded."""
    ids, _ = _token_ids(idx)
    _check_context_size(model, context_size)
    _check_max_new_tokens(max_new_tokens)
    temperature = float(temperature)
    top_p = _check_top_p(top_p)
    if not (math.isfinite(temperature) and temperature >= 0.0):
        raise InputError(f"temperature must be a finite number >= 0, got {temperature}")
    if eos_id is not None and ids.shape[0] != 1:
        raise InputError(f"eos_id stopping needs batch size 1 (as in the book), got batch "
                         f"{ids.shape[0]}")
    if use_cache and not isinstance(model, CACHED_MODELS):
        raise InputTypeError(f"use_cache=True needs a tinygpt GPTModel, Qwen3Model or Llama3Model, "
                             f"got {type(model).__name__}; pass use_cache=False")
    cache = model.new_kv_cache(context_size) if use_cache else None
    for step in range(max_new_tokens):
        with no_grad():
            if cache is None:
                logits = _last_logits(model, ids[:, -context_size:], None, step)  # (b, vocab)
            elif 0 < cache.length < context_size:
                logits = _last_logits(model, ids[:, -1:], cache, step)  # (b, vocab), one new token
            else:  # first step, or the window slides: (re)build the cache from the window
                cache.reset()
                logits = _last_logits(model, ids[:, -context_size:], cache, step)  # (b, vocab)
            idx_next = _next_token(logits, temperature, top_k, top_p)  # (b, 1)
        if eos_id is not None and idx_next[0, 0] == eos_id:
            return
        ids = np.concatenate([ids, idx_next], axis=1)                 # (b, n + 1)
        yield idx_next
