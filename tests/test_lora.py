"""LoRA (book appendix E) against a PyTorch reference on copied weights, plus freezing, merging
and the adapters-only state dict."""
import math

import numpy as np
import pytest
import torch

import tinygpt as tg
from tinygpt.finetune.lora import (
    LinearWithLoRA,
    LoRALayer,
    load_lora,
    load_lora_state_dict,
    lora_modules,
    lora_state_dict,
    merge_lora,
    replace_linear_with_lora,
    save_lora,
)
from tinygpt.model import GPTModel
from tinygpt.nn import GELU, Linear, Module, Sequential
from tinygpt.optim import AdamW

TINY = {"vocab_size": 97, "context_length": 12, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
        "drop_rate": 0.0, "qkv_bias": True}
N_LINEARS = TINY["n_layers"] * 6 + 1  # W_query/W_key/W_value/out_proj + 2 in ff per block, out_head


class TorchLoRALayer(torch.nn.Module):  # the book's appendix-E code
    def __init__(self, A, B, alpha):
        super().__init__()
        self.A, self.B, self.alpha = torch.nn.Parameter(A), torch.nn.Parameter(B), alpha

    def forward(self, x):
        return self.alpha * (x @ self.A @ self.B)


class TorchLinearWithLoRA(torch.nn.Module):
    def __init__(self, linear, lora):
        super().__init__()
        self.linear, self.lora = linear, lora

    def forward(self, x):
        return self.linear(x) + self.lora(x)


def t(a):
    return torch.from_numpy(np.array(a, copy=True))


def torch_twin(layer: LinearWithLoRA):
    lin = torch.nn.Linear(layer.in_features, layer.out_features, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(t(layer.linear.weight.data))
        lin.bias.copy_(t(layer.linear.bias.data))
    lin.requires_grad_(False)
    return TorchLinearWithLoRA(lin, TorchLoRALayer(t(layer.lora.A.data), t(layer.lora.B.data),
                                                   layer.lora.alpha))


def randomize_B(model, rng, scale=0.1):
    """B starts at zero (so A gets no gradient); tests that need both use a random B."""
    for _, layer in lora_modules(model):
        layer.B.data = (scale * rng.standard_normal(layer.B.shape)).astype(layer.B.dtype)


def test_init_matches_book():
    tg.manual_seed(0)
    layer = LoRALayer(4096, 8, rank=4, alpha=2.0)
    bound = 1 / math.sqrt(4)  # kaiming_uniform_(a=sqrt(5)) on (in_dim, rank): fan_in = rank
    ref = torch.empty(4096, 4)
    torch.nn.init.kaiming_uniform_(ref, a=math.sqrt(5))
    assert np.abs(layer.A.data).max() <= bound and np.abs(layer.A.data).max() > 0.99 * bound
    assert abs(ref.abs().max().item() - bound) < 0.01
    assert layer.A.dtype == np.float32 and layer.B.dtype == np.float32
    assert not layer.B.data.any()
    with pytest.raises(ValueError, match="rank"):
        LoRALayer(4, 4, rank=0, alpha=1)


@pytest.mark.parametrize("shape", [(5, 6), (2, 3, 6)])
def test_linear_with_lora_forward_and_grads_match_torch(shape):
    rng = np.random.default_rng(0)
    tg.manual_seed(1)
    layer = LinearWithLoRA(Linear(6, 7).to(np.float64), rank=3, alpha=1.5)
    layer.linear.requires_grad_(False)
    randomize_B(layer, rng)
    ref = torch_twin(layer)
    x = rng.standard_normal(shape)
    dout = rng.standard_normal(shape[:-1] + (7,))

    xt = tg.tensor(x, requires_grad=True)
    out = layer(xt)
    (out * tg.tensor(dout)).sum().backward()
    xr = t(x).requires_grad_(True)
    out_r = ref(xr)
    (out_r * t(dout)).sum().backward()

    assert out.dtype == np.float64
    np.testing.assert_allclose(out.data, out_r.detach().numpy(), rtol=1e-10, atol=1e-12)
    for mine, theirs in [(xt.grad, xr.grad), (layer.lora.A.grad, ref.lora.A.grad),
                         (layer.lora.B.grad, ref.lora.B.grad)]:
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-10, atol=1e-12)
    assert layer.linear.weight.grad is None and layer.linear.bias.grad is None  # frozen: no work


class MLP(Module):
    def __init__(self):
        super().__init__()
        self.layers = Sequential(Linear(5, 8), GELU(), Linear(8, 3))

    def forward(self, x):
        return self.layers(x)


def test_replace_in_sequential_keeps_order_and_matches_torch():
    rng = np.random.default_rng(2)
    tg.manual_seed(2)
    model = MLP().to(np.float64)
    x = rng.standard_normal((4, 5))
    before = model(x).data
    replace_linear_with_lora(model, rank=2, alpha=4)
    assert [type(m).__name__ for m in model.layers] == ["LinearWithLoRA", "GELU", "LinearWithLoRA"]
    np.testing.assert_array_equal(model(x).data, before)  # B = 0: the same function
    randomize_B(model, rng)
    twins = [torch_twin(model.layers[0]), torch_twin(model.layers[2])]
    ref = torch.nn.Sequential(twins[0], torch.nn.GELU(approximate="tanh"), twins[1])
    dout = rng.standard_normal((4, 3))
    (model(x) * tg.tensor(dout)).sum().backward()
    (ref(t(x)) * t(dout)).sum().backward()
    for mine, twin in zip((model.layers[0], model.layers[2]), twins):
        np.testing.assert_allclose(mine.lora.A.grad, twin.lora.A.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(mine.lora.B.grad, twin.lora.B.grad.numpy(), rtol=1e-9, atol=1e-12)


def lora_gpt(seed=0, rank=4, alpha=8, cfg=TINY, dtype=np.float32):
    tg.manual_seed(seed)
    model = GPTModel(cfg).to(dtype)
    return replace_linear_with_lora(model, rank, alpha)


def test_replace_freezes_base_and_only_lora_trains():
    model = lora_gpt()
    wrapped = [m for _, m in model.named_modules() if isinstance(m, LinearWithLoRA)]
    assert len(wrapped) == N_LINEARS
    assert not any(isinstance(m, Linear) for m in model.modules() if m not in
                   [w.linear for w in wrapped])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(lora_state_dict(model))
    assert len(trainable) == 2 * N_LINEARS
    replace_linear_with_lora(model, 4, 8)  # again: already wrapped layers are left alone
    assert len(lora_modules(model)) == N_LINEARS

    frozen = {n: p.data.copy() for n, p in model.named_parameters() if not p.requires_grad}
    lora_before = lora_state_dict(model)
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 97, (2, 10))
    y = rng.integers(0, 97, (2, 10))
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = tg.nn.functional.cross_entropy(model(x).flatten(0, 1), y.reshape(-1))
        loss.backward()
        assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
        optimizer.step()
        losses.append(loss.item())
    for n, p in model.named_parameters():
        if not p.requires_grad:
            np.testing.assert_array_equal(p.data, frozen[n], err_msg=n)
    after = lora_state_dict(model)
    assert all(not np.array_equal(after[k], lora_before[k]) for k in after if k.endswith(".B"))
    assert losses[-1] < losses[0]


def test_merge_gives_identical_outputs_and_plain_names():
    rng = np.random.default_rng(3)
    tg.manual_seed(0)
    plain_names = list(GPTModel(TINY).state_dict())
    model = lora_gpt(dtype=np.float64)
    randomize_B(model, rng)
    x = rng.integers(0, 97, (2, 9))
    before = model(x).data
    merge_lora(model)
    assert not lora_modules(model)
    assert list(model.state_dict()) == plain_names
    np.testing.assert_allclose(model(x).data, before, rtol=1e-10, atol=1e-10)

    model32 = lora_gpt(dtype=np.float32)
    randomize_B(model32, rng)
    before = model32(x).data
    np.testing.assert_allclose(merge_lora(model32)(x).data, before, rtol=1e-4, atol=1e-5)


def test_merge_unties_a_shared_head_weight():
    rng = np.random.default_rng(4)
    model = lora_gpt(cfg={**TINY, "tie_weights": True}, dtype=np.float64)
    assert model.weights_tied  # LinearWithLoRA exposes the wrapped weight
    emb = model.tok_emb.weight.data.copy()
    randomize_B(model, rng)
    x = rng.integers(0, 97, (1, 7))
    before = model(x).data
    merge_lora(model)
    np.testing.assert_array_equal(model.tok_emb.weight.data, emb)  # the embedding is untouched
    assert not model.weights_tied
    np.testing.assert_allclose(model(x).data, before, rtol=1e-10, atol=1e-10)


def test_lora_state_dict_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    model = lora_gpt(seed=0)
    randomize_B(model, rng)
    sd = lora_state_dict(model)
    assert all(k.endswith((".lora.A", ".lora.B")) for k in sd)
    x = rng.integers(0, 97, (2, 6))
    expected = model(x).data

    fresh = lora_gpt(seed=0)  # same base weights, zero B, different A draws
    fresh_rng_A = lora_gpt(seed=9)
    load_lora_state_dict(fresh, sd)
    np.testing.assert_array_equal(fresh(x).data, expected)

    path = save_lora(tmp_path / "adapters.safetensors", model)
    other = lora_gpt(seed=0)
    assert load_lora(path, other) == {"rank": 4, "alpha": 8.0}
    np.testing.assert_array_equal(other(x).data, expected)

    with pytest.raises(ValueError, match="shape mismatches"):
        load_lora_state_dict(lora_gpt(rank=2), sd)
    with pytest.raises(ValueError, match="missing LoRA keys"):
        load_lora_state_dict(fresh_rng_A, {k: v for k, v in sd.items() if "out_head" not in k})
    with pytest.raises(ValueError, match="no LoRA layers"):
        lora_state_dict(GPTModel(TINY))


def test_save_lora_writes_atomically_with_the_umask_mode(tmp_path, monkeypatch):
    """Through tinygpt.files.atomic_write: the file gets the mode a plain open() would give it
    (not a private temp file's 0o600), and a failed write leaves the old file and no temp."""
    import os
    model = lora_gpt(seed=0)
    path = tmp_path / "adapters.safetensors"
    old_umask = os.umask(0o022)
    try:
        save_lora(path, model)
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o644
    before = path.read_bytes()
    import safetensors.numpy

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(safetensors.numpy, "save", broken)
    monkeypatch.setattr(safetensors.numpy, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_lora(path, model)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapters.safetensors"]


def test_lora_gpt_generates_with_the_kv_cache_and_after_merging():
    """A LoRA GPTModel readied by for_inference: its FastMultiHeadAttention takes LoRA's wrapped
    projections through the layers (never packed, which would miss the update); after merge_lora
    for_inference packs the merged Linears."""
    from tinygpt.model import FastMultiHeadAttention, for_inference, generate
    rng = np.random.default_rng(6)
    model = for_inference(lora_gpt(seed=0, dtype=np.float64)).eval()
    assert all(type(block.att) is FastMultiHeadAttention and not block.att.packed
               for block in model.trf_blocks)
    randomize_B(model, rng, scale=1.0)
    prompt = rng.integers(0, 97, (2, 3))
    uncached = generate(model, prompt, 8, 12, use_cache=False)
    np.testing.assert_array_equal(generate(model, prompt, 8, 12), uncached)
    with tg.no_grad():
        logits = model(prompt).data
    merge_lora(model)
    assert for_inference(model) is model
    assert all(block.att.packed for block in model.trf_blocks)
    with tg.no_grad():
        np.testing.assert_allclose(model(prompt).data, logits, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(generate(model, prompt, 8, 12), uncached)
