"""The GPT model, book chapter 4.

Section 4.3 `FeedForward` (emb -> 4*emb -> GELU (tanh form) -> emb), 4.5 `TransformerBlock`
(pre-LayerNorm, shortcut connections, dropout), 4.6 `GPTModel` with the book's module names, so
state dicts interchange with the book's PyTorch model (`tok_emb.weight`, `pos_emb.weight`,
`trf_blocks.0.att.mask`, `trf_blocks.0.att.W_query.weight`, `trf_blocks.0.ff.layers.0.weight`,
`trf_blocks.0.norm1.scale`, ..., `final_norm.shift`, `out_head.weight`); and the section-4.6
parameter count and memory size. Section 4.2's LayerNorm (`scale`, `shift`) and 4.3's GELU (tanh
form) are the engine's `tinygpt.nn` layers, re-exported here under the book's names.
"""
import numpy as np

from ..core.dtypes import check_index_array
from ..core.tensor import Tensor
from ..nn import GELU, Dropout, Embedding, LayerNorm, Linear, Module, Sequential
from .attention import BookStateDict, LayerKVCache, MultiHeadAttention
from .config import validate_config
from ..errors import InputError


class FeedForward(Module):
    """Section 4.3: Linear(emb, 4*emb), GELU, Linear(4*emb, emb) in a Sequential named `layers`."""

    def __init__(self, cfg):
        super().__init__()
        emb = cfg["emb_dim"]
        self.layers = Sequential(Linear(emb, 4 * emb), GELU(), Linear(4 * emb, emb))

    def forward(self, x):
        return self.layers(x)  # (b, T, emb) -> (b, T, 4*emb) -> (b, T, emb)


class TransformerBlock(BookStateDict, Module):
    """Section 4.5: x + drop(att(norm1(x))), then x + drop(ff(norm2(x)))."""

    def __init__(self, cfg):
        super().__init__()
        self.att = MultiHeadAttention(d_in=cfg["emb_dim"], d_out=cfg["emb_dim"],
                                      context_length=cfg["context_length"],
                                      num_heads=cfg["n_heads"], dropout=cfg["drop_rate"],
                                      qkv_bias=cfg["qkv_bias"])
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = Dropout(cfg["drop_rate"])

    def forward(self, x, kv_cache: LayerKVCache | None = None):
        shortcut = x                                # (b, T, emb)
        x = self.norm1(x)                           # (b, T, emb)
        x = self.att(x, kv_cache)                   # (b, T, emb)
        x = self.drop_shortcut(x) + shortcut        # (b, T, emb)
        shortcut = x
        x = self.norm2(x)                           # (b, T, emb)
        x = self.ff(x)                              # (b, T, emb)
        return self.drop_shortcut(x) + shortcut     # (b, T, emb)


class KVCache:
    """One `LayerKVCache` per transformer block; `length` tokens are cached (section 4.7 extension,
    used by `tinygpt.model.generate`). Build it with `model.new_kv_cache()`."""

    def __init__(self, n_layers: int, max_len: int):
        self.layers = [LayerKVCache(max_len) for _ in range(n_layers)]
        self.max_len = max_len

    @property
    def length(self) -> int:
        return self.layers[0].length

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()

    @classmethod
    def for_model(cls, cfg: dict, max_len: int | None = None) -> "KVCache":
        """An empty cache for a model of config `cfg`, for up to `max_len` (default
        context_length) tokens: what every model's `new_kv_cache` returns."""
        ctx = cfg["context_length"]
        max_len = ctx if max_len is None else max_len
        if not 0 < max_len <= ctx:
            raise InputError(f"KV cache max_len {max_len} must be in 1..context_length ({ctx})")
        return cls(cfg["n_layers"], max_len)


class GPTModel(BookStateDict, Module):
    """Section 4.6. `model(idx)`: int ndarray or Tensor (batch, tokens) -> logits Tensor
    (batch, tokens, vocab_size).

    `forward(in_idx, kv_cache=None, last_only=False)`: with a `KVCache` (under no_grad), `in_idx`
    holds only new tokens, placed at positions kv_cache.length onwards. `last_only=True` computes
    the logits of the last position only, (batch, 1, vocab_size): all generation needs.

    Weight tying (cfg key `tie_weights` or `model.tie_weights()`): out_head.weight IS
    tok_emb.weight, one Parameter; the state dict lists it under both names, as PyTorch does.

    Each block is the book's: `att` a MultiHeadAttention, each weight its own array.
    `tinygpt.model.for_inference(model)` makes a model faster to generate with (inference.py)."""

    def __init__(self, cfg):
        super().__init__()
        cfg = validate_config(cfg)
        self.cfg = cfg
        self.tok_emb = Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = Dropout(cfg["drop_rate"])
        self.trf_blocks = Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
        if cfg["tie_weights"]:
            self.tie_weights()

    # --- weight tying ---------------------------------------------------------------------
    def tie_weights(self) -> "GPTModel":
        """Make out_head use the token embedding matrix (both (vocab_size, emb_dim))."""
        self.out_head.weight = self.tok_emb.weight
        return self

    @property
    def weights_tied(self) -> bool:
        return self.out_head.weight is self.tok_emb.weight

    def load_state_dict(self, state_dict, strict: bool = True):
        """As Module.load_state_dict (plus the book's optional mask entries). When tied, either
        of tok_emb.weight / out_head.weight may be missing; if both are given they must agree."""
        if self.weights_tied:
            names = ("tok_emb.weight", "out_head.weight")
            given = [n for n in names if n in state_dict]
            if len(given) == 2 and not np.array_equal(np.asarray(state_dict[names[0]]),
                                                      np.asarray(state_dict[names[1]])):
                raise InputError("load_state_dict: the model ties out_head.weight to "
                                 "tok_emb.weight but the state dict holds different arrays")
            if len(given) == 1:
                missing = names[1] if given[0] == names[0] else names[0]
                state_dict = {**state_dict, missing: state_dict[given[0]]}
        return super().load_state_dict(state_dict, strict)

    # --- forward --------------------------------------------------------------------------
    def new_kv_cache(self, max_len: int | None = None) -> KVCache:
        """An empty cache for up to `max_len` (default context_length) tokens."""
        return KVCache.for_model(self.cfg, max_len)

    def _token_ids(self, in_idx) -> np.ndarray:
        idx = np.asarray(in_idx.data if isinstance(in_idx, Tensor) else in_idx)
        idx = check_index_array(idx, "GPTModel input token ids")
        if idx.ndim != 2 or idx.shape[1] == 0:
            raise InputError(f"GPTModel input must have shape (batch, tokens) with tokens >= 1, "
                             f"got {idx.shape}")
        return idx  # ids outside the vocabulary are refused by tok_emb (ops.embedding)

    def forward(self, in_idx, kv_cache: KVCache | None = None, last_only: bool = False):
        idx = self._token_ids(in_idx)                # (b, T) int64
        batch_size, seq_len = idx.shape
        start = 0 if kv_cache is None else kv_cache.length
        ctx = self.cfg["context_length"]
        if start + seq_len > ctx:
            cached = f" ({start} cached + {seq_len} new)" if kv_cache is not None else ""
            raise InputError(f"GPTModel got {start + seq_len} tokens{cached} but context_length "
                             f"is {ctx}; crop the input to its last {ctx} tokens")
        tok_embeds = self.tok_emb(idx)               # (b, T, emb)
        pos_embeds = self.pos_emb(np.arange(start, start + seq_len))  # (T, emb)
        x = self.drop_emb(tok_embeds + pos_embeds)   # (b, T, emb)
        for i, block in enumerate(self.trf_blocks):
            x = block(x, None if kv_cache is None else kv_cache.layers[i])  # (b, T, emb)
        if last_only:
            x = x[:, -1:, :]                         # (b, 1, emb)
        x = self.final_norm(x)                       # (b, T or 1, emb)
        return self.out_head(x)                      # (b, T or 1, vocab)


def count_parameters(model: Module, exclude_out_head: bool = False) -> int:
    """Section 4.6: total parameters, each distinct Parameter once (163,009,536 for an untied
    GPT_CONFIG_124M). `exclude_out_head=True` is the book's count "considering weight tying"
    (124,412,160): out_head.weight is not counted separately (a tied model never counts it twice)."""
    total = sum(p.size for p in model.parameters())
    head = getattr(model, "out_head", None)
    if exclude_out_head and head is not None and not getattr(model, "weights_tied", False):
        total -= sum(p.size for p in head.parameters())
    return total


def model_size_mb(model: Module) -> float:
    """Section 4.6: parameter memory in MB as the book prints it, bytes / 1024**2
    (float32: 4 bytes each, 621.83 MB for GPT_CONFIG_124M)."""
    return sum(p.size * p.dtype.itemsize for p in model.parameters()) / (1024 * 1024)
