"""An independent PyTorch twin of the book's chapter 3-4 modules (book names and listings),
used only by the tests and benchmarks as the oracle for tinygpt.model.

Everything here follows the book's code: the masks are persistent buffers, attention divides the
scores by sqrt(head_dim) and fills the future with -inf before the softmax, GELU is the tanh
form, LayerNorm uses the biased variance and eps 1e-5. Plus helpers that move weights between a
tinygpt module and its twin by state-dict name.
"""
import numpy as np
import torch
import torch.nn as nn


class SelfAttention_v1(nn.Module):  # section 3.3.2
    def __init__(self, d_in, d_out):
        super().__init__()
        self.W_query = nn.Parameter(torch.rand(d_in, d_out))
        self.W_key = nn.Parameter(torch.rand(d_in, d_out))
        self.W_value = nn.Parameter(torch.rand(d_in, d_out))

    def forward(self, x):
        keys = x @ self.W_key
        queries = x @ self.W_query
        values = x @ self.W_value
        attn_scores = queries @ keys.T
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        return attn_weights @ values


class SelfAttention_v2(nn.Module):  # section 3.4.2
    def __init__(self, d_in, d_out, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x):
        keys = self.W_key(x)
        queries = self.W_query(x)
        values = self.W_value(x)
        attn_scores = queries @ keys.T
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        return attn_weights @ values


class CausalAttention(nn.Module):  # section 3.5.3
    def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
        super().__init__()
        self.d_out = d_out
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        b, num_tokens, d_in = x.shape
        keys = self.W_key(x)
        queries = self.W_query(x)
        values = self.W_value(x)
        attn_scores = queries @ keys.transpose(1, 2)
        attn_scores = attn_scores.masked_fill(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)
        return attn_weights @ values


class MultiHeadAttentionWrapper(nn.Module):  # section 3.6.1
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.heads = nn.ModuleList([CausalAttention(d_in, d_out, context_length, dropout, qkv_bias)
                                    for _ in range(num_heads)])

    def forward(self, x):
        return torch.cat([head(x) for head in self.heads], dim=-1)


class MultiHeadAttention(nn.Module):  # section 3.6.2
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        b, num_tokens, d_in = x.shape
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        attn_scores = queries @ keys.transpose(2, 3)
        mask_bool = self.mask.bool()[:num_tokens, :num_tokens]
        attn_scores.masked_fill_(mask_bool, -torch.inf)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)
        context_vec = (attn_weights @ values).transpose(1, 2)
        context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(context_vec)


class LayerNorm(nn.Module):  # section 4.2
    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class GELU(nn.Module):  # section 4.3, tanh approximation
    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(torch.sqrt(torch.tensor(2.0 / torch.pi, dtype=x.dtype))
                                         * (x + 0.044715 * torch.pow(x, 3))))


class FeedForward(nn.Module):  # section 4.3
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]), GELU(),
                                    nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]))

    def forward(self, x):
        return self.layers(x)


class TransformerBlock(nn.Module):  # section 4.5
    def __init__(self, cfg):
        super().__init__()
        self.att = MultiHeadAttention(d_in=cfg["emb_dim"], d_out=cfg["emb_dim"],
                                      context_length=cfg["context_length"],
                                      num_heads=cfg["n_heads"], dropout=cfg["drop_rate"],
                                      qkv_bias=cfg["qkv_bias"])
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x):
        shortcut = x
        x = self.norm1(x)
        x = self.att(x)
        x = self.drop_shortcut(x)
        x = x + shortcut
        shortcut = x
        x = self.norm2(x)
        x = self.ff(x)
        x = self.drop_shortcut(x)
        return x + shortcut


class GPTModel(nn.Module):  # section 4.6
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx):
        batch_size, seq_len = in_idx.shape
        tok_embeds = self.tok_emb(in_idx)
        pos_embeds = self.pos_emb(torch.arange(seq_len, device=in_idx.device))
        x = tok_embeds + pos_embeds
        x = self.drop_emb(x)
        x = self.trf_blocks(x)
        x = self.final_norm(x)
        return self.out_head(x)


def generate_text_simple(model, idx, max_new_tokens, context_size):  # section 4.7
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]
        probas = torch.softmax(logits, dim=-1)
        idx_next = torch.argmax(probas, dim=-1, keepdim=True)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


# --- moving weights between tinygpt and the twin ------------------------------------------------
def to_torch_state_dict(state_dict) -> dict:
    """A tinygpt state dict ({name: ndarray}) as torch tensors (copies)."""
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state_dict.items()}


def to_numpy_state_dict(module: nn.Module) -> dict:
    """The twin's state dict ({name: tensor}) as ndarrays (copies)."""
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def copy_tinygpt_to_torch(tg_module, torch_module: nn.Module) -> None:
    """Load a tinygpt module's weights into its twin (strict: every name must match), after
    casting the twin to the tinygpt parameters' dtype."""
    sd = to_torch_state_dict(tg_module.state_dict())
    if sd:
        torch_module.to(next(iter(sd.values())).dtype)
    torch_module.load_state_dict(sd, strict=True)


# --- comparing a tinygpt module with its twin ---------------------------------------------------
# "within 1e-4 relative": max |tinygpt - torch| <= RTOL * scale, per tensor, where scale is
# max |torch| of that tensor, but at least 1% of the largest gradient in the comparison: a
# gradient that is zero in exact arithmetic (a key bias: softmax ignores a per-row constant)
# holds only round-off, which no relative test of its own size can pass.
FLOOR = 1e-2
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-9}


def diff_table(actual: dict, expected: dict, rtol: float):
    """(rows, failed): one row per name with max abs and relative diff; names must agree."""
    if list(actual) != list(expected):
        missing = [k for k in expected if k not in actual]
        extra = [k for k in actual if k not in expected]
        raise AssertionError(f"names differ: missing {missing}, unexpected {extra}")
    rows, failed = [], []
    grads = [np.abs(np.asarray(v)).max() for k, v in expected.items()
             if k not in ("output", "loss") and np.size(v)]
    floor = FLOOR * float(max(grads, default=0.0))
    for name in expected:
        a, e = np.asarray(actual[name]), np.asarray(expected[name])
        if a.shape != e.shape or a.dtype != e.dtype:
            failed.append(name)
            rows.append(f"  {name}: tinygpt {a.shape} {a.dtype} vs torch {e.shape} {e.dtype}")
            continue
        abs_diff = float(np.abs(a - e).max()) if e.size else 0.0
        scale = max(float(np.abs(e).max()) if e.size else 0.0, floor, 1e-30)
        rel = abs_diff / scale
        bad = not np.isfinite(a).all() or abs_diff > rtol * scale
        if bad:
            failed.append(name)
        rows.append(f"  {'FAIL' if bad else 'ok  '} {name:45s} max|diff| {abs_diff:.3e}  rel {rel:.3e}")
    return rows, failed


def assert_close_by_name(actual: dict, expected: dict, rtol: float, what: str) -> None:
    rows, failed = diff_table(actual, expected, rtol)
    if failed:
        raise AssertionError(f"{what}: {len(failed)} tensor(s) beyond rtol {rtol}:\n" + "\n".join(rows))


def run_tinygpt(module, x: np.ndarray, targets: np.ndarray):
    """Forward, cross-entropy over the last dim, backward. x: float input (gets a gradient) or
    int token ids. Returns {name: array} with 'output', 'loss', 'input' (float x) and every
    parameter's gradient by name."""
    import tinygpt as tg
    from tinygpt.nn import functional as F

    inp = tg.tensor(x, requires_grad=True) if x.dtype.kind == "f" else x
    out = module(inp)
    loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), targets.reshape(-1))
    module.zero_grad()
    loss.backward()
    res = {"output": out.data, "loss": loss.data}
    if x.dtype.kind == "f":
        res["input"] = inp.grad
    res.update({n: p.grad for n, p in module.named_parameters()})
    return res


def run_torch(module: nn.Module, x: np.ndarray, targets: np.ndarray):
    """The same for the twin (named_parameters order matches tinygpt's)."""
    inp = torch.from_numpy(x.copy())
    if x.dtype.kind == "f":
        inp.requires_grad_(True)
    out = module(inp)
    loss = nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]),
                                       torch.from_numpy(targets.reshape(-1)))
    module.zero_grad()
    loss.backward()
    res = {"output": out.detach().numpy(), "loss": loss.detach().numpy()}
    if x.dtype.kind == "f":
        res["input"] = inp.grad.numpy()
    res.update({n: p.grad.numpy() for n, p in module.named_parameters()})
    return res


def assert_matches_torch(tg_module, torch_module: nn.Module, x: np.ndarray,
                         targets: np.ndarray, what: str) -> None:
    """Copy tinygpt's weights into the twin, then compare output, loss, the input gradient and
    every parameter gradient by name at the dtype's tolerance."""
    copy_tinygpt_to_torch(tg_module, torch_module)
    params = tg_module.parameters()
    dtype = params[0].dtype if params else x.dtype
    assert x.dtype.kind != "f" or x.dtype == dtype
    got = run_tinygpt(tg_module, x, targets)
    want = run_torch(torch_module, x, targets)
    assert got["output"].dtype == dtype, f"{what}: output dtype {got['output'].dtype} != {dtype}"
    assert_close_by_name(got, want, RTOL[dtype], what)
