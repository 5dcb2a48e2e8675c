"""Inside one forward pass: where a token looks (attention weights of a layer and head), what the
model predicts next (top-k probabilities), and what each layer already predicts (logit lens).

Nothing in the model changes for it. Forward hooks on the book-shaped modules record what they
see (`trf_blocks[i].att` its inputs: x, and the RoPE tables the layer was handed; `trf_blocks[i]`
its output), and the attention weights are recomputed from that input through the layer's own
W_query and W_key, exactly as its forward computes them: softmax(scale * q k^T) under the causal
mask. What differs between the families is read from the layer itself, one small function each:
QK-norm per head (Qwen3, Gemma 3) or over the whole projection (Olmo 3), RoPE (all but GPT-2),
the score scale (Gemma 3's `scaling`, else 1 / sqrt(head_dim)) and the sliding window (Gemma 3's
and Olmo 3's local layers). The fast layers of `for_inference` hold the same Linears and norms,
so a model readied for generation can be inspected too.

    attention_weights(model, ids, layer)            -> (heads, T, T) ndarray
    attention_heatmap(model, tokenizer, text, layer, head)  -> a matplotlib Figure
    next_token_table(model, tokenizer, text, position, k)  -> TokenTable (print it)
    inspect_position(model, ids, position, layer, k)       -> Inspection (`tinygpt serve`)
"""
from dataclasses import dataclass

import numpy as np

from ..core.autograd import no_grad
from ..core.tensor import Tensor
from ..errors import InputError, InputIndexError
from ..ops import rope


def _check_ids(model, ids) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1 or ids.size == 0 or ids.dtype.kind not in "iu":
        raise InputError(f"token ids must be a non-empty 1-D integer sequence, got {ids.dtype} "
                         f"{ids.shape}")
    ctx, vocab = model.cfg["context_length"], model.cfg["vocab_size"]
    if ids.size > ctx:
        raise InputError(f"{ids.size} tokens exceed the model's context_length {ctx}")
    if ids.min() < 0 or ids.max() >= vocab:
        raise InputIndexError(f"token ids must lie in 0..{vocab - 1}")
    return ids.astype(np.int64)


def _check_layer(model, layer: int) -> int:
    n = len(model.trf_blocks)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -n <= layer < n:
        raise InputIndexError(f"layer must be an int in 0..{n - 1}, got {layer!r}")
    return int(layer) % n


def _qk_norm_width(att):
    """How many values att's QK-norm normalises together: None without one (GPT-2, Llama)."""
    norm = getattr(att, "q_norm", None)
    return None if norm is None else norm.num_parameters()


def _norm_whole_projection(att, queries, keys):
    """Olmo 3: q_norm over the whole query projection (H * hd values), k_norm over the keys'
    (G * hd), before the split into heads. queries (1, T, H*hd), keys (1, T, G*hd)."""
    if _qk_norm_width(att) in (None, att.head_dim):  # none, or per head (one head: the same)
        return queries, keys
    return att.q_norm(queries), att.k_norm(keys)


def _norm_per_head(att, queries, keys):
    """Qwen3 and Gemma 3: an RMSNorm over each head's head_dim values (Gemma's scales by 1 +
    scale in its own forward). queries (1, H, T, hd), keys (1, G, T, hd)."""
    if _qk_norm_width(att) != att.head_dim:
        return queries, keys
    return att.q_norm(queries), att.k_norm(keys)


def _score_scale(att) -> float:
    """Gemma 3 scales the scores by query_pre_attn_scalar ** -0.5 (its `scaling`); the others
    by 1 / sqrt(head_dim)."""
    return float(getattr(att, "scaling", att.head_dim ** -0.5))


def _window(att):
    """Gemma 3's and Olmo 3's local layers: a query sees only its last `sliding_window` keys
    (itself included). None on full-attention layers and in the other families."""
    return getattr(att, "sliding_window", None)


def _heads(att, x, cos, sin):
    """Queries and keys of every head, (H, T, hd) float64 each, as att's forward makes them:
    query head h paired with its key head (h // group size under grouped-query attention)."""
    b, t, _ = x.shape                                       # b == 1
    kv_heads = getattr(att, "num_kv_groups", att.num_heads)
    hd = att.head_dim
    queries, keys = att.W_query(x), att.W_key(x)            # (1, T, H*hd), (1, T, G*hd)
    queries, keys = _norm_whole_projection(att, queries, keys)
    queries = queries.view(b, t, att.num_heads, hd).transpose(1, 2)  # (1, H, T, hd)
    keys = keys.view(b, t, kv_heads, hd).transpose(1, 2)             # (1, G, T, hd)
    queries, keys = _norm_per_head(att, queries, keys)
    if cos is not None:                                     # all but GPT-2: rotate by position
        queries, keys = rope(queries, cos, sin), rope(keys, cos, sin)
    keys = np.repeat(keys.data[0], att.num_heads // kv_heads, axis=0)  # (H, T, hd)
    return queries.data[0].astype(np.float64), keys.astype(np.float64)


def _causal_softmax(queries, keys, first_query: int, scale: float, window=None) -> np.ndarray:
    """softmax(scale * q k^T) with query i at position p = first_query + i seeing keys 0..p, or
    with `window` only keys p - window + 1 .. p. queries (H, Tq, hd), keys (H, T, hd) ->
    (H, Tq, T), exactly 0 where a key is not seen."""
    scores = queries @ keys.transpose(0, 2, 1) * scale                     # (H, Tq, T)
    pos_q = first_query + np.arange(queries.shape[1])[:, None]             # (Tq, 1)
    pos_k = np.arange(keys.shape[1])[None, :]                              # (1, T)
    visible = pos_k <= pos_q                                               # (Tq, T)
    if window is not None:
        visible &= pos_q - pos_k < window                                  # the far past out
    scores = np.where(visible, scores, -np.inf)
    scores -= scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)                                               # 0 where masked
    return weights / weights.sum(axis=-1, keepdims=True)


class _Recorder:
    """Forward hooks on one layer's attention (its inputs) and on every block (its output)."""

    def __init__(self, model, layer: int):
        self.att_inputs, self.block_outputs = None, []
        att = model.trf_blocks[layer].att
        self.handles = [att.register_forward_hook(self._att)]
        self.handles += [block.register_forward_hook(self._block) for block in model.trf_blocks]

    def _att(self, module, inputs, output):
        self.att_inputs = inputs

    def _block(self, module, inputs, output):
        self.block_outputs.append(output.data[0, -1])       # (emb,) the last position's stream

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _run(model, ids: np.ndarray, layer: int):
    """One forward of ids (T,) -> (recorder, last position's logits (vocab,))."""
    recorder = _Recorder(model, layer)
    try:
        with no_grad():
            logits = model(ids[None, :], last_only=True)     # (1, 1, vocab)
    finally:
        recorder.remove()
    return recorder, logits.data[0, -1]


def _layer_attention(model, recorder, layer: int, first_query: int) -> np.ndarray:
    x, *rest = recorder.att_inputs                          # x (1, T, emb); with RoPE: cos, sin
    cos, sin = (rest[0], rest[1]) if len(rest) >= 2 else (None, None)
    att = model.trf_blocks[layer].att
    with no_grad():
        queries, keys = _heads(att, x, cos, sin)            # (H, T, hd) each
    return _causal_softmax(queries[:, first_query:], keys, first_query, _score_scale(att),
                           _window(att))                    # (H, T - first, T)


def attention_weights(model, ids, layer: int) -> np.ndarray:
    """The attention weights of `layer` for token ids (T,) or (1, T): (heads, T, T) float64,
    row i the weights of token i over tokens 0..i (each row sums to 1; on a sliding-window layer
    the keys more than sliding_window - 1 tokens back weigh exactly 0)."""
    ids, layer = _check_ids(model, ids), _check_layer(model, layer)
    recorder, _ = _run(model, ids, layer)
    return _layer_attention(model, recorder, layer, 0)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max()
    p = np.exp(z)
    return p / p.sum()


@dataclass
class Inspection:
    """What the model computes at one position of a text (`inspect_position`)."""
    position: int
    top_ids: list                  # the k most probable next tokens, most probable first
    top_probs: list                # their probabilities (softmax of the logits, temperature 1)
    prob_sum: float                # the probabilities summed over the whole vocabulary
    attention: np.ndarray          # (heads, position + 1): the token's weights over its context
    lens_ids: list                 # per layer: the top token read out of its output (logit lens)
    lens_probs: list               # ... and its probability
    next_id: int | None = None     # the token that follows in the text, if any
    next_prob: float | None = None
    next_rank: int | None = None   # 1 = the most probable


def inspect_position(model, ids, position: int, layer: int, k: int = 10) -> Inspection:
    """Top-k next-token probabilities at `position` of ids (T,), the attention of that token
    over tokens 0..position in `layer` (every head), and the logit lens: each block's output at
    that position through final_norm and out_head. One forward over ids[:position + 1]."""
    ids, layer = _check_ids(model, ids), _check_layer(model, layer)
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) \
            or not -ids.size <= position < ids.size:
        raise InputIndexError(f"position must be an int in 0..{ids.size - 1}, got {position!r}")
    position = int(position) % ids.size
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= 100:
        raise InputError(f"k must be an int in 1..100, got {k!r}")
    recorder, logits = _run(model, ids[:position + 1], layer)
    probs = _softmax(logits)                                # (vocab,) float64
    top = np.argsort(-probs, kind="stable")[:k]
    attention = _layer_attention(model, recorder, layer, position)[:, 0]  # (H, position + 1)
    lens_ids, lens_probs = [], []
    with no_grad():
        for hidden in recorder.block_outputs:               # (emb,) after each block
            read = model.out_head(model.final_norm(Tensor(hidden[None, None, :]))).data[0, 0]
            p = _softmax(read)
            lens_ids.append(int(p.argmax()))
            lens_probs.append(float(p.max()))
    out = Inspection(position, [int(i) for i in top], [float(probs[i]) for i in top],
                     float(probs.sum()), attention, lens_ids, lens_probs)
    if position + 1 < ids.size:
        out.next_id = int(ids[position + 1])
        out.next_prob = float(probs[out.next_id])
        out.next_rank = int((probs > probs[out.next_id]).sum()) + 1
    return out


def _encode(tokenizer, text: str) -> np.ndarray:
    from ..model.generate import text_to_token_ids
    if not isinstance(text, str) or not text:
        raise InputError("text must be a non-empty string")
    return text_to_token_ids(text, tokenizer)[0]


def _pieces(tokenizer, ids) -> list:
    return [tokenizer.decode([int(i)]) for i in ids]


def attention_heatmap(model, tokenizer, text: str, layer: int, head: int | None = None):
    """A heatmap of where each token of `text` looks in `layer`: rows are queries, columns the
    keys, for one `head` (None: the average over heads). Returns a matplotlib Figure (shown
    inline in a notebook; `fig.savefig(path)` writes it). The numbers: `attention_weights`."""
    ids = _encode(tokenizer, text)
    weights = attention_weights(model, ids, layer)          # (H, T, T)
    n_heads = weights.shape[0]
    if head is not None and (isinstance(head, bool) or not isinstance(head, (int, np.integer))
                             or not 0 <= head < n_heads):
        raise InputIndexError(f"head must be None (the average) or an int in 0..{n_heads - 1}, "
                              f"got {head!r}")
    grid = weights.mean(axis=0) if head is None else weights[head]  # (T, T)
    from matplotlib.figure import Figure  # no pyplot: no global backend is changed
    size = min(12.0, 2.0 + 0.35 * ids.size)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0)
    labels = [repr(p)[1:-1] for p in _pieces(tokenizer, ids)]
    ax.set_xticks(range(ids.size), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(ids.size), labels, fontsize=7)
    ax.set_xlabel("attends to (key)")
    ax.set_ylabel("token (query)")
    ax.set_title(f"layer {_check_layer(model, layer)}, "
                 f"{'average of heads' if head is None else f'head {head}'}")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


@dataclass
class TokenTable:
    """`next_token_table`'s answer: `top` rows (token, id, probability), `lens` rows (layer,
    token, probability); str() lays them out as text."""
    text: str
    position: int
    token: str
    top: list
    lens: list
    prob_sum: float

    def __str__(self):
        lines = [f"after token {self.position} ({self.token!r}) the model predicts:"]
        lines += [f"  {p:8.2%}  {t!r} (id {i})" for t, i, p in self.top]
        lines.append("logit lens (the top token read out after each layer):")
        lines += [f"  layer {layer:2d}: {t!r} ({p:.2%})" for layer, t, p in self.lens]
        return "\n".join(lines)


def next_token_table(model, tokenizer, text: str, position: int = -1, k: int = 5) -> TokenTable:
    """The top-k next-token probabilities after token `position` of `text` (default the last)
    and its logit lens, as a TokenTable: print it in a notebook or a script."""
    ids = _encode(tokenizer, text)
    got = inspect_position(model, ids, position, 0, k)
    top = [(tokenizer.decode([i]), i, p) for i, p in zip(got.top_ids, got.top_probs)]
    lens = [(n, tokenizer.decode([i]), p)
            for n, (i, p) in enumerate(zip(got.lens_ids, got.lens_probs))]
    return TokenTable(text, got.position, tokenizer.decode([int(ids[got.position])]), top, lens,
                      got.prob_sum)
