"""Hooks as PyTorch users know them: Tensor.register_hook, Module.register_forward_hook and
Module.register_full_backward_hook, each checked against PyTorch on the same graph, each removable,
and none installed by default."""
import numpy as np
import pytest
import torch

import tinygpt as tg
from helpers import assert_close, to_torch
from strategies import fixed_array
from tinygpt.errors import InputError

SMALL = {"vocab_size": 97, "context_length": 16, "emb_dim": 24, "n_heads": 4, "n_layers": 2,
         "drop_rate": 0.0, "qkv_bias": False}


def _graph(x, w):
    """h = x @ w is used twice (tanh(h) * h), so the gradient flowing into h is a sum of two paths."""
    h = x @ w
    return h, (h.tanh() * h).sum()


def test_hooked_intermediate_gradient_matches_torch():
    x, w = fixed_array((3, 4), np.float64), fixed_array((4, 5), np.float64, seed=1)
    tx, tw = to_torch(x).requires_grad_(), to_torch(w).requires_grad_()
    seen, torch_seen = [], []
    th, tloss = _graph(tx, tw)
    th.register_hook(lambda g: torch_seen.append(g.clone()))
    tloss.backward()

    tgx, tgw = tg.Tensor(x, requires_grad=True), tg.Tensor(w, requires_grad=True)
    h, loss = _graph(tgx, tgw)
    handle = h.register_hook(lambda g: seen.append(np.array(g)))
    leaf_handle = tgw.register_hook(lambda g: g * 0.0)
    loss.backward(retain_graph=True)
    assert len(seen) == 1, "the hook runs once, with the whole gradient of h"
    assert_close(seen[0], torch_seen[0].numpy(), what="gradient flowing into h")
    assert not tgw.grad.any(), "the leaf's hook zeroed what reaches .grad"

    handle.remove()
    leaf_handle.remove()
    tgw.grad = None
    loss.backward()  # the same graph again: neither removed hook runs
    assert len(seen) == 1
    assert_close(tgw.grad, tw.grad.numpy(), what="w.grad once the hooks are removed")


def test_a_hook_replaces_the_gradient_like_torch():
    x, w = fixed_array((3, 4), np.float64), fixed_array((4, 5), np.float64, seed=1)
    tx, tw = to_torch(x).requires_grad_(), to_torch(w).requires_grad_()
    th, tloss = _graph(tx, tw)
    th.register_hook(lambda g: g * 3.0)
    tw.register_hook(lambda g: g + 1.0)  # on a leaf: what reaches .grad
    tloss.backward()

    tgx, tgw = tg.Tensor(x, requires_grad=True), tg.Tensor(w, requires_grad=True)
    h, loss = _graph(tgx, tgw)
    h.register_hook(lambda g: g * 3.0)
    tgw.register_hook(lambda g: tg.Tensor(g + 1.0))  # a Tensor return works too
    loss.backward()
    assert_close(tgw.grad, tw.grad.numpy(), what="w.grad after the hooks")
    assert_close(tgx.grad, tx.grad.numpy(), what="x.grad after the hooks")


def test_hook_mistakes_are_named():
    x = tg.Tensor(fixed_array((3,), np.float64), requires_grad=True)
    y = x * 2.0
    y.register_hook(lambda g: np.zeros(4))
    with pytest.raises(InputError, match=r"returned shape \(4,\) for a tensor of shape \(3,\)"):
        y.sum().backward()
    with pytest.raises(InputError, match="does not require grad"):
        tg.ones(3).register_hook(print)
    z = x * 2.0
    z.register_hook(lambda g: g.__setitem__(0, 5.0))  # the gradient handed to a hook is read-only
    with pytest.raises(ValueError, match="read-only"):
        z.sum().backward()


def test_context_manager_handle_and_no_hooks_by_default():
    model = tg.GPTModel(SMALL)
    assert all(m._forward_hooks is None and m._backward_hooks is None for m in model.modules())
    assert all(p._hooks is None for p in model.parameters())
    calls = []
    with model.out_head.register_forward_hook(lambda m, inp, out: calls.append(out.shape)):
        model(np.array([[1, 2, 3]]))
    model(np.array([[1, 2, 3]]))
    assert calls == [(1, 3, 97)]


def test_forward_hooks_see_the_books_module_names():
    tg.manual_seed(0)
    model = tg.GPTModel(SMALL).eval()
    called = []
    handles = [m.register_forward_hook(lambda mod, inp, out, name=name: called.append((name, out.shape)))
               for name, m in model.named_modules() if name]
    logits = model(np.array([[5, 6, 7, 8]]))
    names = [n for n, _ in called]
    for name in ("tok_emb", "pos_emb", "drop_emb", "trf_blocks.0.norm1", "trf_blocks.0.att",
                 "trf_blocks.0.ff", "trf_blocks.0.ff.layers.1", "trf_blocks.1", "final_norm", "out_head"):
        assert name in names, f"no forward hook call for {name}: {names}"
    assert dict(called)["trf_blocks.1.att"] == (1, 4, 24) and dict(called)["out_head"] == (1, 4, 97)
    assert names.index("trf_blocks.0.att") < names.index("trf_blocks.0") < names.index("out_head")

    assert model.out_head.bias is None  # so zeroing final_norm's output zeroes the logits
    replaced = model.final_norm.register_forward_hook(lambda mod, inp, out: out * 0.0)
    assert not model(np.array([[5, 6, 7, 8]])).data.any(), "a forward hook's return replaces the output"
    for h in handles + [replaced]:
        h.remove()
    called.clear()
    assert_close(model(np.array([[5, 6, 7, 8]])).data, logits.data, what="logits after remove()")
    assert called == []


def _residual(lib_linear, x):
    return lib_linear(x).tanh() + x  # x reaches the output through the Linear and the shortcut


def test_module_backward_hook_matches_torch():
    x = fixed_array((2, 4), np.float64)
    tlin = torch.nn.Linear(4, 4).double()
    lin = tg.nn.Linear(4, 4).to(np.float64)
    lin.load_state_dict({k: v.detach().numpy() for k, v in tlin.state_dict().items()})
    ours, theirs = [], []
    tlin.register_full_backward_hook(lambda m, gi, go: theirs.append((gi[0].clone(), go[0].clone())))
    handle = lin.register_full_backward_hook(lambda m, gi, go: ours.append((np.array(gi[0]), np.array(go[0]))))
    tx, x_tg = to_torch(x).requires_grad_(), tg.Tensor(x, requires_grad=True)
    dout = fixed_array((2, 4), np.float64, seed=3)
    (_residual(tlin, tx) * to_torch(dout)).sum().backward()
    (_residual(lin, x_tg) * tg.Tensor(dout)).sum().backward()
    assert len(ours) == 1
    assert_close(ours[0][0], theirs[0][0].numpy(), what="grad_input (the Linear's share only)")
    assert_close(ours[0][1], theirs[0][1].numpy(), what="grad_output")
    assert_close(x_tg.grad, tx.grad.numpy(), what="x.grad through hook and shortcut")
    assert_close(lin.weight.grad, tlin.weight.grad.numpy(), what="weight.grad")

    handle.remove()
    _residual(lin, x_tg).sum().backward()
    assert len(ours) == 1


def test_module_backward_hook_without_input_gradient():
    lin = tg.nn.Linear(3, 2)
    seen = []
    lin.register_full_backward_hook(lambda m, gi, go: seen.append((gi, go[0].shape)))
    lin(tg.ones(4, 3)).sum().backward()
    assert seen == [((None,), (4, 2))], "as in PyTorch: grad_input is None for an input without grad"
    lin.register_full_backward_hook(lambda m, gi, go: gi)
    with pytest.raises(InputError, match="module backward hooks observe"):
        lin(tg.ones(4, 3)).sum().backward()
