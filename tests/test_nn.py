"""Modules: registration and dotted names, state_dict round trips with PyTorch, freezing, modes,
and PyTorch-default initialisation statistics."""
import numpy as np
import pytest
import torch

import tinygpt as tg
from tinygpt import nn
from helpers import tolerance


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(6)
        self.layers = nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.Dropout(0.1), nn.Linear(12, 6))

    def forward(self, x):
        return x + self.layers(self.norm(x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(6, 11, bias=False)

    def forward(self, idx):
        x = self.emb(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class TorchNet(torch.nn.Module):
    """The same architecture in PyTorch; LayerNorm params renamed to the book's scale/shift."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(11, 6)
        self.blocks = torch.nn.ModuleList([TorchBlock(), TorchBlock()])
        self.head = torch.nn.Linear(6, 11, bias=False)


class TorchBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.Module()
        self.norm.scale = torch.nn.Parameter(torch.ones(6))
        self.norm.shift = torch.nn.Parameter(torch.zeros(6))
        self.layers = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.GELU(), torch.nn.Dropout(0.1),
                                          torch.nn.Linear(12, 6))


def test_named_parameters_follow_pytorch_names_and_order():
    names = [n for n, _ in Net().named_parameters()]
    assert names == [n for n, _ in TorchNet().named_parameters()]
    assert names[:3] == ["emb.weight", "blocks.0.norm.scale", "blocks.0.norm.shift"]
    assert "blocks.1.layers.3.bias" in names


def test_state_dict_round_trip_through_pytorch_is_exact():
    net, tnet = Net(), TorchNet()
    tnet.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in net.state_dict().items()})
    back = Net()
    back.load_state_dict({k: v.detach().numpy() for k, v in tnet.state_dict().items()})
    for (k, a), (k2, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and np.array_equal(a, b)


def test_load_state_dict_copies_instead_of_aliasing():
    net = Net()
    sd = {k: v.copy() for k, v in net.state_dict().items()}
    net.load_state_dict(sd)
    sd["emb.weight"][0, 0] = 123.0
    assert net.emb.weight.data[0, 0] != 123.0


def test_load_state_dict_reports_every_problem_and_loads_nothing():
    net = Net()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    sd = {k: np.zeros_like(v) for k, v in before.items()}
    del sd["head.weight"]
    sd["extra.weight"] = np.zeros(3, np.float32)
    sd["emb.weight"] = np.zeros((5, 6), np.float32)
    with pytest.raises(ValueError) as err:
        net.load_state_dict(sd)
    msg = str(err.value)
    assert "missing keys: head.weight" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "emb.weight: checkpoint (5, 6) vs model (11, 6)" in msg
    for k, v in net.state_dict().items():  # never half-loaded
        assert np.array_equal(v, before[k])


def test_load_state_dict_non_strict_ignores_missing_and_unexpected():
    net = Net()
    missing, unexpected = net.load_state_dict({"head.weight": np.ones((11, 6)), "x": np.ones(1)},
                                              strict=False)
    assert "emb.weight" in missing and unexpected == ["x"]
    assert net.head.weight.dtype == np.float32 and np.all(net.head.weight.data == 1)


def test_freezing_gives_no_gradient_and_no_update():
    net = Net()
    net.requires_grad_(False)
    net.head.requires_grad_(True)
    frozen = net.blocks[0].layers[0].weight
    before = frozen.data.copy()
    opt = tg.optim.AdamW(net.parameters(), lr=0.1, weight_decay=0.1)
    loss = nn.functional.cross_entropy(net(np.array([[1, 2, 3]])).flatten(0, 1), np.array([4, 5, 6]))
    loss.backward()
    opt.step()
    assert frozen.grad is None and np.array_equal(frozen.data, before)
    assert net.head.weight.grad is not None


def test_frozen_subgraph_records_nothing():
    lin = nn.Linear(4, 3)
    lin.requires_grad_(False)
    out = lin(tg.randn(2, 4))
    assert not out.requires_grad and out._ctx is None


def test_train_eval_switch_reaches_every_submodule():
    net = Net()
    net.eval()
    assert all(not m.training for m in net.modules())
    x = np.array([[1, 2, 3, 4]])
    assert np.array_equal(net(x).data, net(x).data)  # dropout off
    net.train()
    assert all(m.training for m in net.modules())


def test_dropout_module_is_seeded_and_active_only_in_training():
    drop = nn.Dropout(0.5)
    x = tg.ones(1000)
    tg.manual_seed(7)
    a = drop(x).data
    tg.manual_seed(7)
    b = drop(x).data
    assert np.array_equal(a, b) and set(np.unique(a)) == {0.0, 2.0}
    drop.eval()
    assert np.array_equal(drop(x).data, x.data)


def test_zero_grad_clears_gradients():
    net = Net()
    net(np.array([[1]])).sum().backward()
    assert net.head.weight.grad is not None
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_initialisation_matches_pytorch_defaults():
    tg.manual_seed(0)
    lin = nn.Linear(400, 300)
    bound = 1 / np.sqrt(400)
    for p in (lin.weight.data, lin.bias.data):
        assert p.dtype == np.float32 and np.abs(p).max() <= bound
    assert abs(lin.weight.data.std() - bound / np.sqrt(3)) < 0.02 * bound
    emb = nn.Embedding(1000, 100).weight.data
    assert abs(emb.mean()) < 0.02 and abs(emb.std() - 1) < 0.02
    ln = nn.LayerNorm(5)
    assert np.all(ln.scale.data == 1) and np.all(ln.shift.data == 0)


def test_manual_seed_makes_initialisation_reproducible():
    tg.manual_seed(3)
    a = Net().state_dict()
    tg.manual_seed(3)
    b = Net().state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_linear_rejects_wrong_feature_size():
    with pytest.raises(ValueError, match=r"Linear\(4, 3\) got input of shape \(2, 5\)"):
        nn.Linear(4, 3)(tg.randn(2, 5))


def test_tied_parameter_listed_once_but_in_state_dict_twice():
    net = Net()
    net.head.weight = net.emb.weight
    names = [n for n, _ in net.named_parameters()]
    assert "head.weight" not in names and "head.weight" in net.state_dict()


def test_module_float64_forward_and_backward():
    net = Net().to(np.float64)
    out = net(np.array([[1, 2]]))
    out.sum().backward()
    assert out.dtype == np.float64 and net.emb.weight.grad.dtype == np.float64


def test_clip_grad_norm_matches_pytorch():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (5,), (2, 2, 2)]]
    params = [nn.Parameter(np.zeros_like(g)) for g in grads]
    tparams = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
    for p, tp, g in zip(params, tparams, grads):
        p.grad, tp.grad = g.copy(), torch.from_numpy(g.copy())
    total = nn.utils.clip_grad_norm_(params, 1.0)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, 1.0)
    np.testing.assert_allclose(total, ttotal.item(), **tolerance("optimizer", np.float32))
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), **tolerance("optimizer", np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_draws_weight_then_bias_from_the_init_stream(dtype):
    # torch's order (weight in (out, in) memory order, then bias), kaiming's bound for the weight,
    # 1/sqrt(in) for the bias; dropout's NumPy stream is not touched (torch-free twin of
    # test_init_matches_torch.py)
    from tinygpt.core import random
    from tinygpt.nn import layers
    tg.manual_seed(3)
    lin, emb = nn.Linear(37, 29, dtype=dtype), nn.Embedding(5, 7, dtype=dtype)
    after = random.generator().random()
    tg.manual_seed(3)
    bound = layers.kaiming_uniform_bound(37)
    w = random.uniform((29, 37), -bound, bound, dtype)
    b = random.uniform((29,), -1 / 37 ** 0.5, 1 / 37 ** 0.5, dtype)
    e = random.randn((5, 7), dtype)
    for got, want in [(lin.weight.data, w), (lin.bias.data, b), (emb.weight.data, e)]:
        assert got.dtype == dtype and np.array_equal(got, want)
    assert after == random.generator().random()
    assert abs(layers.kaiming_uniform_bound(37) - 1 / 37 ** 0.5) < 1e-16


def test_skip_init_allocates_without_drawing_and_only_inside():
    """Inside skip_init, Linear and Embedding take no values from the generator (load_pretrained
    builds its model so, then reads every parameter); after the block, layers draw again and
    draw what they would have drawn had the block never run."""
    tg.manual_seed(5)
    with nn.skip_init():
        skipped = [nn.Linear(6, 4), nn.Embedding(9, 3)]
    drawn = nn.Linear(6, 4)
    tg.manual_seed(5)
    fresh = nn.Linear(6, 4)
    assert [p.shape for m in skipped for p in m.parameters()] == [(4, 6), (4,), (9, 3)]
    assert all(p.dtype == np.float32 for m in skipped for p in m.parameters())
    np.testing.assert_array_equal(drawn.weight.data, fresh.weight.data)
    np.testing.assert_array_equal(drawn.bias.data, fresh.bias.data)
