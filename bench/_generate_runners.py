"""The runners bench/generate.py times: each is a factory registered with `@runner(name)` that,
given the config and the seed, builds what it needs and returns
`generate(prompt_ids, new_tokens) -> ids (1, n + new_tokens)` as a NumPy array. The tinygpt runners
share one GPTModel readied by `for_inference`, as the CLI's generate is (`shared_model`); the
PyTorch ones share the book's `llms_from_scratch.ch04` GPTModel loaded with its state dict
(`shared_torch_model`), so every runner has the same weights.

Imported by bench/generate.py after it has set the thread environment (NumPy is loaded here).
"""
import numpy as np

import tinygpt as tg
from tinygpt.model import GPTModel, for_inference, generate, generate_text_simple

RUNNERS = {}
_MODELS = {}


def runner(name):
    """Register a factory `(cfg, seed) -> generate(prompt_ids, new_tokens)` under `name`."""
    def register(factory):
        RUNNERS[name] = factory
        return factory
    return register


def shared_model(cfg, seed):
    """One tinygpt GPTModel per (config, seed), readied by for_inference, in eval mode, shared by
    all tinygpt runners."""
    key = (tuple(sorted(cfg.items())), seed)
    if key not in _MODELS:
        tg.manual_seed(seed)
        _MODELS[key] = for_inference(GPTModel(cfg)).eval()
    return _MODELS[key]


def shared_torch_model(cfg, seed):
    """The book's PyTorch GPTModel (llms_from_scratch.ch04) with shared_model's weights, eval mode."""
    key = ("torch", tuple(sorted(cfg.items())), seed)
    if key not in _MODELS:
        import torch  # its thread pool is set by bench/generate.py (_common.set_threads)
        from llms_from_scratch import ch04
        model = ch04.GPTModel(cfg)
        sd = shared_model(cfg, seed).state_dict()
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})
        _MODELS[key] = model.eval()
    return _MODELS[key]


@runner("tinygpt-book-simple")
def _tinygpt_book(cfg, seed):
    """The book's section-4.7 loop: full logits for the whole window every step."""
    model = shared_model(cfg, seed)
    return lambda ids, n: generate_text_simple(model, ids, n, cfg["context_length"])


@runner("tinygpt-uncached")
def _tinygpt_uncached(cfg, seed):
    """generate(use_cache=False): the window is recomputed every step, last logits only."""
    model = shared_model(cfg, seed)
    return lambda ids, n: generate(model, ids, n, cfg["context_length"], use_cache=False)


@runner("tinygpt-cached")
def _tinygpt_cached(cfg, seed):
    """generate(use_cache=True): prompt once, then one token per step through the KV cache."""
    model = shared_model(cfg, seed)
    return lambda ids, n: generate(model, ids, n, cfg["context_length"], use_cache=True)


@runner("torch-book-simple")
def _torch_book(cfg, seed):
    """The book's own ch04.generate_text_simple on its GPTModel (whole window every step)."""
    import torch
    from llms_from_scratch import ch04
    model = shared_torch_model(cfg, seed)

    def gen(ids, n):
        return ch04.generate_text_simple(model, torch.from_numpy(ids), n, cfg["context_length"]).numpy()
    return gen


class TorchKVDecoder:
    """Greedy KV-cache decoding for the book's ch04.GPTModel (eval mode, batch 1+).

    The same modules and arithmetic as ch04's forward (its LayerNorm, FeedForward with its GELU,
    W_query/W_key/W_value/out_proj, dropout off in eval), but keys and values of past positions
    come from a cache preallocated to `max_len`; new tokens attend to cache[:pos + t]. Only the
    prompt step (t > 1) needs the causal mask; a single new token sees every cached position."""

    def __init__(self, model, max_len):
        self.model, self.max_len = model, max_len

    def _forward(self, ids, caches, start):
        import torch
        m = self.model
        b, t = ids.shape
        x = m.tok_emb(ids) + m.pos_emb(torch.arange(start, start + t))   # (b, t, d)
        end = start + t
        for block, (kc, vc) in zip(m.trf_blocks, caches):
            att = block.att
            h, hd = att.num_heads, att.head_dim
            y = block.norm1(x)
            q = att.W_query(y).view(b, t, h, hd).transpose(1, 2)          # (b, h, t, hd)
            kc[:, :, start:end] = att.W_key(y).view(b, t, h, hd).transpose(1, 2)
            vc[:, :, start:end] = att.W_value(y).view(b, t, h, hd).transpose(1, 2)
            scores = q @ kc[:, :, :end].transpose(2, 3)                     # (b, h, t, end)
            if t > 1:
                mask = torch.ones(t, end, dtype=torch.bool).triu(start + 1)  # query i sees <= start+i
                scores.masked_fill_(mask, -torch.inf)
            w = torch.softmax(scores / hd ** 0.5, dim=-1)
            ctx = (w @ vc[:, :, :end]).transpose(1, 2).reshape(b, t, att.d_out)
            x = x + att.out_proj(ctx)
            x = x + block.ff(block.norm2(x))
        return m.out_head(m.final_norm(x[:, -1:, :]))[:, -1, :]           # (b, vocab)

    def generate(self, idx, max_new_tokens):
        import torch
        m = self.model
        b = idx.shape[0]
        att0 = m.trf_blocks[0].att
        shape = (b, att0.num_heads, self.max_len, att0.head_dim)
        with torch.no_grad():
            caches = [(torch.empty(shape), torch.empty(shape)) for _ in m.trf_blocks]
            if idx.shape[1] + max_new_tokens > self.max_len:
                raise ValueError("TorchKVDecoder: prompt + new tokens exceed the cache (no sliding window)")
            logits = self._forward(idx, caches, 0)
            pos, out = idx.shape[1], [idx]
            for i in range(max_new_tokens):
                nxt = torch.argmax(logits, dim=-1, keepdim=True)           # (b, 1)
                out.append(nxt)
                if i + 1 < max_new_tokens:
                    logits = self._forward(nxt, caches, pos)
                    pos += 1
        return torch.cat(out, dim=1)


@runner("torch-kv-cache")
def _torch_kv(cfg, seed):
    """TorchKVDecoder above: prompt once, then one token per step."""
    import torch
    dec = TorchKVDecoder(shared_torch_model(cfg, seed), cfg["context_length"])
    return lambda ids, n: dec.generate(torch.from_numpy(ids), n).numpy()
