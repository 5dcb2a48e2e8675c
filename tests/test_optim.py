"""Optimizers: several-step trajectories equal torch.optim's on the same parameters and gradients,
and state dicts resume exactly."""
import numpy as np
import pytest
import torch

import tinygpt as tg
from tinygpt import nn
from helpers import tolerance

SHAPES = [(4, 3), (3,), (2, 2, 5)]


def _run(make_tg, make_torch, dtype, steps=6, seed=0):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    params = [nn.Parameter(a.copy()) for a in init]
    tparams = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init]
    opt, topt = make_tg(params), make_torch(tparams)
    for step_grads in grads:
        for p, tp, g in zip(params, tparams, step_grads):
            p.grad, tp.grad = g.copy(), torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    return params, tparams




@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [dict(lr=0.01), dict(lr=0.05, weight_decay=0.1),
                                dict(lr=0.003, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.0)])
def test_adamw_trajectory_matches_torch(dtype, kw):
    params, tparams = _run(lambda ps: tg.optim.AdamW(ps, **kw), lambda ps: torch.optim.AdamW(ps, **kw), dtype)
    for p, tp in zip(params, tparams):
        assert p.dtype == dtype
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **tolerance("optimizer", dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [dict(lr=0.1), dict(lr=0.1, momentum=0.9),
                                dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
                                dict(lr=0.05, momentum=0.8, nesterov=True)])
def test_sgd_trajectory_matches_torch(dtype, kw):
    params, tparams = _run(lambda ps: tg.optim.SGD(ps, **kw), lambda ps: torch.optim.SGD(ps, **kw), dtype)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **tolerance("optimizer", dtype))


@pytest.mark.parametrize("make", [lambda ps: tg.optim.AdamW(ps, lr=0.01, weight_decay=0.1),
                                  lambda ps: tg.optim.SGD(ps, lr=0.1, momentum=0.9)])
def test_state_dict_resume_equals_uninterrupted(make):
    rng = np.random.default_rng(1)
    init = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(6)]

    def steps(params, opt, gs):
        for step_grads in gs:
            for p, g in zip(params, step_grads):
                p.grad = g.copy()
            opt.step()

    straight = [nn.Parameter(a.copy()) for a in init]
    steps(straight, make(straight), grads)

    first = [nn.Parameter(a.copy()) for a in init]
    opt = make(first)
    steps(first, opt, grads[:3])
    saved_params, saved_opt = [p.data.copy() for p in first], opt.state_dict()
    resumed = [nn.Parameter(a) for a in saved_params]
    opt2 = make(resumed)
    opt2.load_state_dict(saved_opt)
    steps(resumed, opt2, grads[3:])
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a.data, b.data)


def test_state_dict_copies_unless_told_not_to():
    p = nn.Parameter(np.ones(3))
    opt = tg.optim.AdamW([p], lr=0.1)
    p.grad = np.ones(3)
    opt.step()
    copied, live = opt.state_dict()["state"][0], opt.state_dict(copy=False)["state"][0]
    assert live["exp_avg"] is opt.state[id(p)]["exp_avg"]
    assert not np.shares_memory(copied["exp_avg"], live["exp_avg"])
    p.grad = np.ones(3)
    opt.step()
    assert not np.array_equal(copied["exp_avg"], live["exp_avg"])


def test_zero_grad_and_skipped_parameters():
    a, b = nn.Parameter(np.ones(3)), nn.Parameter(np.ones(3))
    opt = tg.optim.AdamW([a, b], lr=0.1)
    a.grad = np.ones(3)
    opt.step()
    assert np.all(a.data < 1) and np.all(b.data == 1)  # b had no gradient: untouched, no decay
    opt.zero_grad()
    assert a.grad is None


def test_param_groups_take_their_own_settings():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = tg.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    a.grad, b.grad = np.ones(2), np.ones(2)
    opt.step()
    np.testing.assert_allclose(a.data, 0.9)
    np.testing.assert_allclose(b.data, 0.5)


def test_bad_hyperparameters_and_mismatched_state_raise():
    with pytest.raises(ValueError, match="betas"):
        tg.optim.AdamW([nn.Parameter(np.ones(2))], betas=(1.5, 0.9))
    with pytest.raises(ValueError, match="empty parameter list"):
        tg.optim.SGD([], lr=0.1)
    opt = tg.optim.AdamW([nn.Parameter(np.ones(2))])
    with pytest.raises(ValueError, match="parameter groups"):
        opt.load_state_dict(tg.optim.AdamW([nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))]).state_dict())


@pytest.mark.parametrize("make", [lambda ps, **kw: tg.optim.AdamW(ps, **kw),
                                  lambda ps, **kw: tg.optim.SGD(ps, **{"lr": 0.1, **kw})])
@pytest.mark.parametrize("name", ["lr", "weight_decay"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), -1.0])
def test_non_finite_or_negative_hyperparameters_are_refused(make, name, value):
    # AdamW(lr=nan) was accepted (nan < 0 is False) and turned every weight into NaN at step 1
    with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0, got {value}"):
        make([nn.Parameter(np.ones(2))], **{name: value})


def test_adamw_refuses_non_finite_eps_and_betas():
    p = [nn.Parameter(np.ones(2))]
    with pytest.raises(ValueError, match="eps must be a finite number"):
        tg.optim.AdamW(p, eps=float("nan"))
    with pytest.raises(ValueError, match="betas must be two numbers"):
        tg.optim.AdamW(p, betas=(0.9, float("nan")))
    with pytest.raises(ValueError, match="momentum must be a finite number"):
        tg.optim.SGD(p, lr=0.1, momentum=float("inf"))
