"""AdamW (decoupled weight decay, Loshchilov & Hutter), the optimizer the book trains with.
Defaults and update follow torch.optim.AdamW; the arithmetic runs in one in-place kernel pass
per parameter (`kernels.adamw_step`)."""
import numbers

import numpy as np

from .. import kernels
from .optimizer import Optimizer, check_hyperparameters
from ..errors import InputError


class AdamW(Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        check_hyperparameters("AdamW", lr=lr, eps=eps, weight_decay=weight_decay)
        betas = tuple(betas)
        if len(betas) != 2 or not all(isinstance(b, numbers.Real) and 0.0 <= b < 1.0 for b in betas):
            raise InputError(f"AdamW: betas must be two numbers in [0, 1), got {betas!r}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.get(id(p))
                if state is None:
                    if not p.data.flags.c_contiguous:
                        p.data = np.ascontiguousarray(p.data)
                    state = self.state[id(p)] = {"step": 0, "exp_avg": np.zeros_like(p.data),
                                                 "exp_avg_sq": np.zeros_like(p.data)}
                state["step"] += 1
                grad = p.grad if p.grad.flags.c_contiguous else np.ascontiguousarray(p.grad)
                kernels.adamw_step(p.data, grad.astype(p.dtype, copy=False), state["exp_avg"],
                                   state["exp_avg_sq"], state["step"], float(group["lr"]),
                                   float(beta1), float(beta2), float(group["eps"]),
                                   float(group["weight_decay"]))
                p.bump_version()  # a graph that saved p refuses its backward (as torch)
