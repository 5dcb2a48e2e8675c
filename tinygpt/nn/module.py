"""`Module` and `Parameter` (book appendix A.5): sub-modules and parameters register themselves
when assigned as attributes, and get PyTorch-style dotted names, so state dicts interchange
with the book's PyTorch models."""
from collections import OrderedDict

import numpy as np

from ..core.tensor import Tensor
from ..errors import InputError


class Parameter(Tensor):
    """A leaf tensor that a Module trains (requires_grad=True unless frozen)."""

    def __init__(self, data, requires_grad: bool = True):
        data = data.data if isinstance(data, Tensor) else data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad})"


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                               f"before assigning {name!r}")
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, array: np.ndarray) -> None:
        """A constant array that is not a parameter (e.g. a causal mask); not in state_dict."""
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- traversal ------------------------------------------------------------------
    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def children(self):
        return list(self._modules.values())

    def named_parameters(self, prefix: str = "", remove_duplicate: bool = True):
        """(dotted name, Parameter) pairs; a tied parameter appears once, under its first name."""
        seen = set()
        for mod_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if remove_duplicate and id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{mod_name}.{name}" if mod_name else name), param

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    # --- state ------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """{dotted name: ndarray} with every name (tied weights appear under each of their names,
        as in PyTorch). The arrays are the live parameter data; copy them to keep a snapshot."""
        return OrderedDict((n, p.data) for n, p in self.named_parameters(remove_duplicate=False))

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy arrays into the parameters. Every problem is collected first, so the model is
        never half-loaded: missing or unexpected keys (when strict) and shape mismatches raise
        one error listing them all. Arrays are cast to each parameter's dtype and copied into
        the parameter's own array, as PyTorch does, so views of it (a packed W_query/W_key/W_value)
        stay views."""
        own = dict(self.named_parameters(remove_duplicate=False))
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched = [f"{k}: checkpoint {tuple(np.shape(state_dict[k]))} vs model {own[k].shape}"
                      for k in own if k in state_dict and tuple(np.shape(state_dict[k])) != own[k].shape]
        problems = []
        if strict and missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches: {'; '.join(mismatched)}")
        if problems:
            raise InputError(f"load_state_dict into {type(self).__name__} failed: " + " | ".join(problems))
        for name, param in own.items():
            if name in state_dict:
                value = state_dict[name]
                value = value.data if isinstance(value, Tensor) else np.asarray(value)
                if param.data.flags.writeable:
                    np.copyto(param.data, value, casting="unsafe")
                else:
                    param.data = np.array(value, dtype=param.dtype, copy=True)
        return missing, unexpected

    # --- modes ------------------------------------------------------------------------
    def train(self, mode: bool = True):
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, dtype):
        """Cast every parameter to `dtype` (float32 or float64) in place."""
        for p in self.parameters():
            if p.dtype != np.dtype(dtype):
                p.data = p.data.astype(dtype)
                p.grad = None
        return self

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(lines) + "\n)" if lines else ")")
