"""Optimizer base: parameter groups, zero_grad, and state dicts for resuming (book appendix A.7)."""
import copy
import math
import numbers

import numpy as np
from ..errors import InputError


def check_hyperparameters(owner: str, **values) -> None:
    """Raise InputError naming the first value that is not a finite number >= 0: a NaN learning
    rate would otherwise pass every `lr < 0` test and turn the weights into NaN at the first step."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value) or value < 0:
            raise InputError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")


class Optimizer:
    def __init__(self, params, defaults: dict):
        params = list(params)
        if not params:
            raise InputError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups = []
        for group in groups:
            group = {**defaults, **group, "params": list(group["params"])}
            self.param_groups.append(group)
        self.state = {}  # id(param) -> per-parameter state dict

    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self, set_to_none: bool = True):
        for p in self._params():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def step(self):
        raise NotImplementedError(f"{type(self).__name__} must define step")

    def state_dict(self, copy: bool = True) -> dict:
        """{'state': {index: {name: value}}, 'param_groups': [...]} with parameters replaced by
        their index in `parameters()` order, as PyTorch does; arrays are copies unless
        `copy=False`, which hands out the live arrays (a checkpoint writer reads them once, and
        copying AdamW's two moments of the 124M model would add 1.3 GB to the process's peak)."""
        index = {id(p): i for i, p in enumerate(self._params())}
        keep = (lambda v: v.copy()) if copy else (lambda v: v)
        state = {index[pid]: {k: (keep(v) if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                 for pid, s in self.state.items() if pid in index}
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise InputError("optimizer state_dict does not match this optimizer's parameter groups")
        params = self._params()
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            for k, v in s.items():
                if isinstance(v, np.ndarray) and v.shape != p.shape:
                    raise InputError(f"optimizer state {k!r} for parameter {i} has shape {v.shape}, "
                                     f"parameter has {p.shape}")
        self.state = {id(params[int(i)]): {k: (np.array(v, dtype=params[int(i)].dtype)
                                                if isinstance(v, np.ndarray) else v)
                                            for k, v in s.items()}
                      for i, s in state_dict["state"].items()}
        for mine, saved in zip(self.param_groups, groups):
            mine.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})
