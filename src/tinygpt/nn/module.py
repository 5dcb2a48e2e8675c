"""`Module` and `Parameter` (book appendix A.5): sub-modules and parameters register themselves
when assigned as attributes, and get PyTorch-style dotted names, so state dicts interchange
with the book's PyTorch models."""
from collections import OrderedDict
from functools import partial

import numpy as np

from ..core.autograd import RemovableHandle, is_grad_enabled, readonly
from ..core.dtypes import FLOAT_DTYPES
from ..core.tensor import Tensor
from ..errors import InputError, InputTypeError


class Parameter(Tensor):
    """A leaf tensor that a Module trains (requires_grad=True unless frozen)."""

    def __init__(self, data, requires_grad: bool = True):
        data = data.data if isinstance(data, Tensor) else data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad})"


class _Boundary:
    """The identity node a module backward hook puts at the module's edge, so the gradient of one
    input or output is seen apart from the gradients of the input's other uses (a shortcut).
    Not a `Function`: it computes nothing, and test_hooks.py checks what it reports against
    PyTorch's register_full_backward_hook."""

    def __init__(self, parent, on_grad):
        self.parents, self.needs_input_grad, self.on_grad = (parent,), (True,), on_grad

    def backward(self, grad):
        self.on_grad(grad)
        return grad


def _through(tensor, on_grad) -> Tensor:
    out = Tensor(tensor.data, requires_grad=True)
    out._ctx = _Boundary(tensor, on_grad)
    return out


class _ModuleGrads:
    """One call's gradients at a module's edges; calls the module's backward hooks once every
    input that needs a gradient has received it (or, if none does, once the outputs have)."""

    def __init__(self, module, args):
        self.module, self.grad_input, self.grad_output = module, [None] * len(args), []
        self.inputs_waiting = {i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad}
        self.outputs_waiting = set()

    def wrap_inputs(self, args):
        return tuple(_through(a, partial(self.input_grad, i)) if i in self.inputs_waiting else a
                     for i, a in enumerate(args))

    def wrap_outputs(self, out):
        outs = out if isinstance(out, tuple) else (out,)
        self.grad_output = [None] * len(outs)
        self.outputs_waiting = {k for k, o in enumerate(outs) if isinstance(o, Tensor) and o.requires_grad}
        wrapped = tuple(_through(o, partial(self.output_grad, k)) if k in self.outputs_waiting else o
                        for k, o in enumerate(outs))
        return wrapped if isinstance(out, tuple) else wrapped[0]

    def output_grad(self, k, grad):
        self.grad_output[k] = readonly(grad)
        self.outputs_waiting.discard(k)
        if not self.outputs_waiting and not self.inputs_waiting:
            self.call_hooks()

    def input_grad(self, i, grad):
        self.grad_input[i] = readonly(grad)
        self.inputs_waiting.discard(i)
        if not self.inputs_waiting:
            self.call_hooks()

    def call_hooks(self):
        for hook in list((self.module._backward_hooks or {}).values()):
            if hook(self.module, tuple(self.grad_input), tuple(self.grad_output)) is not None:
                raise InputError(f"backward hook {getattr(hook, '__name__', hook)!r} on "
                                 f"{type(self.module).__name__} returned a value: module backward hooks "
                                 "observe; change a gradient with Tensor.register_hook")


class Module:
    # hook registries exist only once a hook is registered: a module without hooks pays two
    # attribute checks per call (`Module.__call__`), nothing more (bench/hooks.py times them)
    _forward_hooks = None
    _backward_hooks = None

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
        if not self._forward_hooks and not self._backward_hooks:
            return self.forward(*args, **kwargs)
        return self._call_with_hooks(args, kwargs)

    def _call_with_hooks(self, args, kwargs):
        grads = _ModuleGrads(self, args) if self._backward_hooks and is_grad_enabled() else None
        if grads is not None:
            args = grads.wrap_inputs(args)
        out = self.forward(*args, **kwargs)
        for hook in list((self._forward_hooks or {}).values()):
            replaced = hook(self, args, out)
            out = out if replaced is None else replaced
        return out if grads is None else grads.wrap_outputs(out)

    # --- hooks --------------------------------------------------------------------------
    def register_forward_hook(self, hook) -> RemovableHandle:
        """Call `hook(module, inputs, output)` after every forward of this module (`inputs` are the
        positional arguments); a non-None return replaces the output. `.remove()` on the handle."""
        if self._forward_hooks is None:
            object.__setattr__(self, "_forward_hooks", {})
        return RemovableHandle(self._forward_hooks, hook)

    def register_full_backward_hook(self, hook) -> RemovableHandle:
        """Call `hook(module, grad_input, grad_output)` during backward, as PyTorch does: tuples
        of read-only gradient arrays with respect to the module's positional Tensor inputs and its
        outputs (None where there is none). The hook observes (it must return None); change a
        gradient with `Tensor.register_hook`. `.remove()` on the handle."""
        if self._backward_hooks is None:
            object.__setattr__(self, "_backward_hooks", {})
        return RemovableHandle(self._backward_hooks, hook)

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
        the parameter's own array, as PyTorch does."""
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
                param.bump_version()  # a graph that saved param refuses its backward (as torch)
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
        if np.dtype(dtype) not in FLOAT_DTYPES:
            raise InputTypeError(f"Module.to({np.dtype(dtype)}): parameters are float32 or float64")
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
