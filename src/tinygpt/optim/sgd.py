"""Stochastic gradient descent with momentum, following torch.optim.SGD's update exactly."""
from ..core.autograd import no_grad
from .optimizer import Optimizer, check_hyperparameters
from ..errors import InputError


class SGD(Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        check_hyperparameters("SGD", lr=lr, momentum=momentum, dampening=dampening,
                              weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise InputError("SGD: nesterov needs momentum > 0 and dampening 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def step(self):
        with no_grad():
            for group in self.param_groups:
                lr, mom, damp = group["lr"], group["momentum"], group["dampening"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    d = p.grad
                    if group["weight_decay"]:
                        d = d + group["weight_decay"] * p.data
                    if mom:
                        state = self.state.setdefault(id(p), {})
                        if "momentum_buffer" not in state:
                            buf = state["momentum_buffer"] = d.copy()
                        else:
                            buf = state["momentum_buffer"]
                            buf *= mom
                            buf += (1.0 - damp) * d
                        d = d + mom * buf if group["nesterov"] else buf
                    p.data -= lr * d
                    p.bump_version()  # a graph that saved p refuses its backward (as torch)
