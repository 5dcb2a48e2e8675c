"""Causal attention as one op (book sections 3.5-3.6): softmax(q k^T / sqrt(hd), causal) v, with
dropout on the attention weights, in `kernels.causal_attention_forward/backward` (blocked, "flash"
attention: no (T, L) array kept between forward and backward).

It computes what the book's `MultiHeadAttention` composes (`queries @ keys.transpose(2, 3)`,
`F.scaled_causal_softmax(scores, 1 / sqrt(hd), dropout_p)`, `attn_weights @ values`), and
`ops.grouped_query_attention` for grouped-query heads, to float rounding; with dropout it drops
exactly the weights `scaled_causal_softmax` drops after the same `manual_seed` (same hash of the
same position in the (b, H, T, L) weights), so a run is reproducible across both routes. The
fast attention twins (model/fast_attention.py, model/fast_modern.py) call it over prompts and in
training; the book-shaped classes keep their composed listing.
"""
from .. import kernels
from ..core.autograd import Function
from ..core.dtypes import require_float
from ..core.random import dropout_seed
from ..core.tensor import as_tensor
from ..errors import InputError, InputTypeError


class CausalAttentionFn(Function):
    """context = dropout(softmax(scale * q k^T, causal)) v. Forward saves the inputs, the context
    and the log-sum-exp of each query row; backward recomputes the weights from them. No
    higher-order gradients (backward works on arrays)."""

    def forward(self, q, k, v, scale, dropout_p, window):
        # q (b, H, T, hd); k, v (b, G, L, hd) -> (b, H, T, hd), a view of (b, T, H, hd) storage
        self.seed = dropout_seed(q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2]) if dropout_p else 0
        self.q, self.k, self.v, self.scale, self.p, self.window = q, k, v, scale, dropout_p, window
        self.out, self.lse = kernels.causal_attention_forward(q, k, v, scale, dropout_p, self.seed, window)
        return self.out.transpose(0, 2, 1, 3)

    def backward(self, g):
        dout = g.transpose(0, 2, 1, 3)                                       # (b, T, H, hd)
        return kernels.causal_attention_backward(self.q, self.k, self.v, self.out, self.lse, dout,
                                                 self.scale, self.p, self.seed, self.window)


def causal_attention(queries, keys, values, dropout_p: float = 0.0, window: int | None = None,
                     scale: float | None = None):
    """Causal attention of queries (b, H, T, head_dim) over keys and values (b, G, L, head_dim),
    G dividing H (query head h reads key/value head h // (H / G); G = H for GPT-2), scores scaled
    by 1 / sqrt(head_dim), attention weights dropped with probability `dropout_p` (pass 0.0 in
    eval mode). Query i sits at position L - T + i (a prompt after L - T cached tokens).
    `window` (sliding-window attention, Gemma 3's local layers): each query sees only its last
    `window` keys, itself included; blocks of keys wholly outside it are skipped. `scale`
    replaces 1 / sqrt(head_dim) (Gemma 3 scales by query_pre_attn_scalar ** -0.5).
    Returns (b, H, T, head_dim), as `attn_weights @ values` does in the book."""
    queries, keys, values = as_tensor(queries), as_tensor(keys), as_tensor(values)
    for name, t in (("queries", queries), ("keys", keys), ("values", values)):
        require_float(t.dtype, f"causal_attention's {name}")
    if not queries.dtype == keys.dtype == values.dtype:
        raise InputTypeError(f"causal_attention: dtypes differ: queries {queries.dtype}, keys "
                             f"{keys.dtype}, values {values.dtype}")
    if queries.ndim != 4 or keys.ndim != 4 or keys.shape != values.shape:
        raise InputError(f"causal_attention needs queries (b, H, T, head_dim) and keys and values "
                         f"(b, G, L, head_dim) of one shape, got {queries.shape}, {keys.shape} and "
                         f"{values.shape}")
    b, n_heads, t, hd = queries.shape
    n_kv, length = keys.shape[1], keys.shape[2]
    if keys.shape[0] != b or keys.shape[3] != hd or n_kv == 0 or n_heads % n_kv:
        raise InputError(f"causal_attention: queries {queries.shape} need keys and values "
                         f"(b={b}, G, L, head_dim={hd}) with G dividing the {n_heads} heads, got "
                         f"{keys.shape}")
    if length < t:
        raise InputError(f"causal_attention needs at least as many keys as queries (query i sits "
                         f"at position L - T + i), got T={t} queries and L={length} keys")
    if not 0.0 <= dropout_p <= 1.0:
        raise InputError(f"dropout probability must be in [0, 1], got {dropout_p}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise InputError(f"causal_attention: window must be an int >= 1 or None, got {window!r}")
    return CausalAttentionFn.apply(queries, keys, values,
                                   scale=1.0 / hd ** 0.5 if scale is None else float(scale),
                                   dropout_p=float(dropout_p), window=window or 0)
