"""Batched generation: several sequences decoded together over one KV cache.

Why: decoding one token reads every weight of the model once (a matrix-vector product per
layer; 2.38 GB per token for Qwen3-0.6B in float32). Decoding B sequences together turns those
products into matrix-matrix products of B rows that read the weights once for all B, so a step
costs little more than one sequence's (bench/reasoning.py measures it).

How (`generate_batched`):

1. Each distinct prompt is prefilled alone through the model's own KV cache: the very forward
   one-at-a-time generation runs. n samples of one prompt (GRPO rollouts, self-consistency,
   best-of-n) prefill it once.
2. The prompts' keys and values are copied right-aligned into one `BatchedKVCache`: with L the
   longest prompt, row r's n_r tokens fill positions L - n_r .. L - 1, and `starts[r] = L - n_r`
   is its first valid key (left padding, without a pad token ever going through the model).
3. Every step feeds one token per row. The fast attention twin (fast_modern.py,
   `FastGroupedQueryAttention._decode`) rotates row r by its own RoPE positions (length -
   starts[r] onwards) and `kernels.cached_attention` reads only its keys starts[r] ..; every other
   part of a block works row by row already. A row stops at its first stop id and leaves the
   batch (its cache row is dropped), so the others no longer pay for it.

Which models: the RoPE models whose forward is RotaryModel's (Qwen3Model, Llama3Model,
Qwen3MoeModel), readied with `for_inference` (in place, when any attention layer is still the
book's; the CLI's models already are). GPT-2 reads one learned position for the whole batch at
kv_cache.length, and the sliding-window models (Gemma 3, Olmo 3) keep their own cache: for them,
and whenever a prompt plus max_new_tokens would not fit the context, `generate_batched` runs the
prompts one at a time (same results, no speed-up).

Equal results: a row's cache holds what its one-at-a-time cache holds and its attention reads
the same keys in the same order, so greedy output is `generate`'s up to the rounding of B-row
products against 1-row ones (tests/test_batched_generate.py). Sampling draws one number per row
per step, row after row: reproducible under `tinygpt.manual_seed`, but not the draws of n
one-at-a-time calls.
"""
import numpy as np

from ..core.autograd import no_grad
from ..errors import InputError, InputTypeError
from .attention import LayerKVCache
from .generate import _check_finite, _check_max_new_tokens, _check_top_p, _next_token, generate_stream
from .gpt import KVCache
from .inference import for_inference
from .modern import GroupedQueryAttention, RotaryModel


class BatchedLayerKVCache(LayerKVCache):
    """One layer's keys and values of B sequences, right-aligned in (B, G, max_len, hd) buffers:
    row r's tokens fill positions starts[r] .. length - 1."""

    def __init__(self, k, v, length: int, starts):
        super().__init__(k.shape[2])
        self.k, self.v, self.length, self.starts = k, v, length, starts


class BatchedKVCache(KVCache):
    """A `BatchedLayerKVCache` per transformer block, all sharing one `starts` (B,)."""

    def __init__(self, layers):
        self.layers, self.max_len = layers, layers[0].max_len

    @property
    def starts(self) -> np.ndarray:
        return self.layers[0].starts

    @classmethod
    def from_prompts(cls, caches, lengths, max_len: int) -> "BatchedKVCache":
        """Row r gets caches[r]'s `lengths[r]` keys and values (a one-sequence KVCache each; one
        cache may serve several rows), right-aligned at the longest length."""
        longest = max(lengths)
        starts = np.array([longest - n for n in lengths], np.int64)          # (B,)
        layers = []
        for i in range(len(caches[0].layers)):
            _, g, _, hd = caches[0].layers[i].k.shape
            dtype = caches[0].layers[i].k.dtype
            k = np.zeros((len(caches), g, max_len, hd), dtype)              # (B, G, max_len, hd)
            v = np.zeros_like(k)                                            # zeros: never read
            for r, (cache, n) in enumerate(zip(caches, lengths)):
                k[r, :, longest - n:longest] = cache.layers[i].k[0, :, :n]  # (G, n, hd)
                v[r, :, longest - n:longest] = cache.layers[i].v[0, :, :n]
            layers.append(BatchedLayerKVCache(k, v, longest, starts))
        return cls(layers)

    def keep(self, rows) -> None:
        """Keep only the batch rows `rows` (indices, in order); the others' buffers are dropped."""
        starts = self.starts[rows]
        for layer in self.layers:
            layer.k, layer.v, layer.starts = layer.k[rows], layer.v[rows], starts


def batchable(model) -> bool:
    """True for the models `generate_batched` decodes together: RotaryModel's forward over
    grouped-query attention (Qwen3, Llama 3), see the module docstring."""
    return (isinstance(model, RotaryModel) and type(model).forward is RotaryModel.forward
            and type(model).new_kv_cache is RotaryModel.new_kv_cache
            and all(isinstance(block.att, GroupedQueryAttention) for block in model.trf_blocks))


def _prompts(prompts, max_new_tokens, context: int):
    if isinstance(prompts, np.ndarray) and prompts.ndim == 1:
        raise InputTypeError("generate_batched takes a list of prompts (each a list of ids)")
    rows = [np.asarray(p, dtype=np.int64).reshape(-1) for p in prompts]
    if not rows or any(len(p) == 0 for p in rows):
        raise InputError("generate_batched needs at least one prompt, each of at least one token")
    _check_max_new_tokens(max_new_tokens)
    longest = max(len(p) for p in rows)
    if longest >= context:
        raise InputError(f"a prompt is {longest} tokens, as long as the context ({context}): "
                         "nothing is left to answer in")
    return rows


def _one_at_a_time(model, prompt, max_new_tokens, stops, temperature, top_p, keep_stop, context):
    window = min(context, len(prompt) + max_new_tokens)  # the cache holds no more than this needs
    out = []
    for token in generate_stream(model, prompt[None, :], max_new_tokens, window, temperature,
                                 top_p=top_p):
        token = int(token[0, 0])
        if token in stops:
            return out + [token] * keep_stop
        out.append(token)
    return out


def generate_batched(model, prompts, max_new_tokens: int, stop_ids=(), temperature: float = 0.0,
                     top_p=None, keep_stop: bool = False, context_length=None) -> list:
    """The token ids the model writes after each of `prompts` (lists or 1-D arrays of ids), as
    one list per prompt: up to `max_new_tokens`, each stopped at its first of `stop_ids` (left
    out, or kept at the end with `keep_stop`). temperature 0: greedy; > 0: sampled (top_p: the
    nucleus), as `generate`. The prompts are decoded together where the model allows it (see the
    module docstring), else one at a time. `context_length` defaults to the model's."""
    context = context_length or model.cfg["context_length"]
    rows = _prompts(prompts, max_new_tokens, context)
    stops = {int(s) for s in stop_ids}
    together = (len(rows) > 1 and max_new_tokens > 1 and batchable(model)
                and max(len(p) for p in rows) + max_new_tokens <= context)
    if not together:
        return [_one_at_a_time(model, p, max_new_tokens, stops, temperature, top_p, keep_stop,
                               context) for p in rows]
    temperature, top_p = float(temperature), _check_top_p(top_p)
    if not (np.isfinite(temperature) and temperature >= 0.0):
        raise InputError(f"temperature must be a finite number >= 0, got {temperature}")
    if any(type(block.att) is GroupedQueryAttention for block in model.trf_blocks):
        for_inference(model)                                 # the fast twins: the decode route
    with no_grad():
        return _decode_together(model, rows, max_new_tokens, stops, temperature, top_p, keep_stop)


def _decode_together(model, rows, max_new_tokens, stops, temperature, top_p, keep_stop):
    prefilled = {}                                           # prompt bytes -> (logits, cache)
    for p in rows:
        if p.tobytes() not in prefilled:
            cache = model.new_kv_cache(len(p))
            logits = model(p[None, :], kv_cache=cache, last_only=True).data[0, -1]  # (vocab,)
            prefilled[p.tobytes()] = (logits, cache)
    firsts = [prefilled[p.tobytes()] for p in rows]
    lengths = [len(p) for p in rows]
    cache = BatchedKVCache.from_prompts([c for _, c in firsts], lengths,
                                        max(lengths) + max_new_tokens)
    logits = np.stack([lg for lg, _ in firsts])              # (B, vocab)
    out, active = [[] for _ in rows], np.arange(len(rows))   # active: batch row -> prompt index
    for step in range(max_new_tokens):
        _check_finite(logits, model, step)
        tokens = _next_token(logits, temperature, None, top_p)[:, 0]  # (b,)
        going = np.array([int(t) not in stops for t in tokens])      # (b,)
        for r, t, go in zip(active, tokens, going):
            if go or keep_stop:
                out[r].append(int(t))
        if step == max_new_tokens - 1 or not going.any():
            break
        if not going.all():                                  # finished rows leave the batch
            kept = np.flatnonzero(going)
            cache.keep(kept)
            active, tokens = active[kept], tokens[kept]
        logits = model(tokens[:, None], kv_cache=cache, last_only=True).data[:, -1]  # (b, vocab)
    return out
