"""Shared by test_qwen3.py, test_llama3.py and test_load_pretrained.py: tiny Qwen3 / Llama 3.2
configs, and the checks that a tinygpt model computes what a PyTorch twin computes (logits, every
parameter gradient of a cross-entropy loss, greedy generation with and without the KV cache).

Float64 comparisons. The references compute RoPE's tables (and Hugging Face its RMSNorm) in
float32 whatever the model's dtype, so a float64 reference would carry float32 rounding. For the
1e-10 float64 checks `exact_float64` gives the PyTorch model float64 tables, computed here in
torch from the book's formula, and an RMSNorm in the model's dtype; everything else is theirs.
"""
import math
import types

import numpy as np
import torch

import tinygpt as tg
from helpers import assert_close, tolerance
from tinygpt.nn import functional as F

TINY_QWEN3 = {"vocab_size": 50, "context_length": 32, "emb_dim": 16, "n_heads": 4, "n_layers": 2,
              "hidden_dim": 24, "head_dim": 8, "qk_norm": True, "n_kv_groups": 2,
              "rope_base": 10_000.0}
# head_dim 8 with these factors puts one RoPE wavelength in each band of Llama 3's scaling
TINY_LLAMA = {"vocab_size": 50, "context_length": 40, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
              "hidden_dim": 24, "n_kv_groups": 2, "rope_base": 500.0,
              "rope_freq": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_context_length": 32}}


def torch_rope_tables(head_dim, base, context_length, freq=None):
    """The book's compute_rope_params, in float64 throughout."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    if freq is not None:
        orig, low_f, high_f = freq["original_context_length"], freq["low_freq_factor"], freq["high_freq_factor"]
        wavelen = 2 * math.pi / inv
        smooth = (orig / wavelen - low_f) / (high_f - low_f)
        scaled = torch.where(wavelen > orig / low_f, inv / freq["factor"], inv)
        medium = (wavelen <= orig / low_f) & (wavelen >= orig / high_f)
        inv = torch.where(medium, (1 - smooth) * inv / freq["factor"] + smooth * inv, scaled)
    angles = torch.arange(context_length, dtype=torch.float64)[:, None] * inv[None, :]
    angles = torch.cat([angles, angles], dim=1)
    return torch.cos(angles), torch.sin(angles)


# test_every_op.py's Rope case: Llama 3 scaling with one frequency in each band, 6 positions
EVERY_OP_ROPE = {"head_dim": 8, "theta_base": 100.0, "context_length": 6,
                 "freq_config": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_context_length": 32}}


def torch_rope(x, offset, head_dim, theta_base, context_length, freq_config):
    """The book's apply_rope on x (..., T, head_dim) at positions offset.., float64 tables."""
    cos, sin = torch_rope_tables(head_dim, theta_base, context_length, freq_config)
    window = slice(offset, offset + x.shape[-2])
    half = head_dim // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[window].to(x.dtype) + rotated * sin[window].to(x.dtype)


def randomize_norms(model, seed=0):
    """RMSNorm scales start at 1; make them differ so a transposed or skipped scale shows."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if p.ndim == 1:
            p.data[...] = 1.0 + 0.2 * rng.standard_normal(p.shape)
    return model


def tokens(cfg, batch=2, length=7, seed=0):
    return np.random.default_rng(seed).integers(0, cfg["vocab_size"], (batch, length))


def loss_and_grads(model, ids, targets):
    """tinygpt: logits, and {name: grad} of the mean cross-entropy over all positions."""
    model.zero_grad()
    logits = model(ids)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.reshape(-1))
    loss.backward()
    return logits.data, {n: p.grad for n, p in model.named_parameters()}


def torch_loss_and_grads(model, ids, targets, logits_of=lambda out: out):
    model.zero_grad()
    logits = logits_of(model(torch.from_numpy(ids)))
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.from_numpy(targets.reshape(-1)))
    loss.backward()
    return logits.detach().numpy(), {n: p.grad.numpy() for n, p in model.named_parameters()}


def compare_logits(ours, theirs, dtype, what):
    if np.dtype(dtype) == np.float64:  # the 1e-10, which is the table's float64 "op" bound
        assert_close(ours, theirs, what=what, tol=tolerance("op", np.float64))
    else:  # a whole model: judged against the largest logit
        assert_close(ours, theirs, what=what, tol=tolerance("model", np.float32))


def compare_grads(ours, theirs, names, dtype, what):
    """`names`: {our name: their name} for every parameter (tied ones once)."""
    assert set(names) == set(ours), (sorted(set(ours) ^ set(names)))
    for mine, their in names.items():
        compare_logits(ours[mine], theirs[their], dtype, f"{what} grad {mine}")


def greedy_torch(model, ids, n, logits_of=lambda out: out):
    ids = torch.from_numpy(ids)
    with torch.no_grad():
        for _ in range(n):
            nxt = logits_of(model(ids))[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    return ids.numpy()


def check_generation(ours, theirs_ids, prompt, context_size):
    ours.eval()
    for use_cache in (True, False):
        got = tg.generate(ours, prompt, 20, context_size, use_cache=use_cache)
        np.testing.assert_array_equal(got, theirs_ids, err_msg=f"use_cache={use_cache}")


def exact_float64(torch_model, head_dim, base, context_length, freq=None):
    """Give a float64 PyTorch model float64 RoPE tables and RMSNorms (see the module docstring):
    the book's models through their cos/sin buffers and RMSNorm flag, a transformers model by
    replacing its rotary embedding's and RMSNorms' forward."""
    cos, sin = torch_rope_tables(head_dim, base, context_length, freq)
    if hasattr(torch_model, "cos"):  # the book's Qwen3Model / Llama3Model
        torch_model.cos, torch_model.sin = cos, sin
    else:
        def rotary(self, x, position_ids):
            return cos[position_ids], sin[position_ids]
        rot = torch_model.model.rotary_emb
        rot.forward = types.MethodType(rotary, rot)
    for module in torch_model.modules():
        if hasattr(module, "qwen3_compatible"):
            module.qwen3_compatible = False  # the book's RMSNorm: no float32 round trip
        elif type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon"):
            def rms(self, x):
                return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))
            module.forward = types.MethodType(rms, module)
    return torch_model


def decode_through_cache(model, ids, prefill):
    """(the logits of `ids` fed through a new KV cache: the first `prefill` tokens at once, then
    one at a time, concatenated; the cache) for comparing with the full forward's logits."""
    with tg.no_grad():
        cache = model.new_kv_cache()
        steps = [model(ids[:, :prefill], kv_cache=cache).data]
        steps += [model(ids[:, i:i + 1], kv_cache=cache).data for i in range(prefill, ids.shape[1])]
    return np.concatenate(steps, axis=1), cache


def train_steps(model, ids, steps=8, lr=1e-2, extra_loss=None, after_backward=None):
    """The cross-entropy losses of `steps` AdamW steps on next-token prediction over `ids`;
    `extra_loss(model)` is added before backward (MoE's balance loss), `after_backward(model)`
    may check the gradients."""
    opt = tg.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = tg.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].reshape(-1))
        (loss if extra_loss is None else loss + extra_loss(model)).backward()
        if after_backward is not None:
            after_backward(model)
        opt.step()
        losses.append(float(loss.data))
    return losses
