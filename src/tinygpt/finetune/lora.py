"""Low-rank adaptation, LoRA (book appendix E; Hu et al. 2021).

A frozen Linear W (out, in) gets a trainable low-rank update: y = x W^T + b + alpha * (x A B),
with A (in, rank) and B (rank, out). B starts at zero, so a fresh LoRA model computes exactly
what the base model computes. Only A and B train: `replace_linear_with_lora` freezes every other
parameter, and frozen parameters cost no gradient work in the engine.

    replace_linear_with_lora(model, rank=16, alpha=16)   # every Linear -> LinearWithLoRA
    ... train ...
    save_lora("adapters.safetensors", model)             # A and B only (lora_state_dict)
    merge_lora(model)                                    # W += alpha * (A @ B)^T, plain Linears again

State-dict names follow the book's PyTorch code: `trf_blocks.0.att.W_query.linear.weight` for
the base weight, `trf_blocks.0.att.W_query.lora.A` / `.lora.B` for the adapters.
"""
import math
import pathlib
from collections import OrderedDict

import numpy as np

from ..core.random import generator
from ..nn import Linear, Module, Parameter
from ..errors import InputError, InputTypeError
from ..files import atomic_write


class LoRALayer(Module):
    """alpha * (x @ A @ B). A is kaiming-uniform with a=sqrt(5) as in the book: for a tensor of
    shape (in_dim, rank) PyTorch's fan_in is rank, so A ~ U(-1/sqrt(rank), 1/sqrt(rank)). B = 0."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float, dtype=np.float32):
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
            raise InputError(f"LoRA rank must be a positive int, got {rank!r}")
        self.in_dim, self.out_dim, self.rank, self.alpha = in_dim, out_dim, int(rank), float(alpha)
        bound = math.sqrt(6.0 / ((1.0 + 5.0) * rank))  # gain sqrt(2/(1+a^2)) * sqrt(3/fan_in)
        self.A = Parameter(generator().uniform(-bound, bound, size=(in_dim, rank)).astype(dtype))
        self.B = Parameter(np.zeros((rank, out_dim), dtype))

    def forward(self, x):
        lead = x.shape[:-1]
        h = (x.reshape(-1, self.in_dim) @ self.A) * self.alpha  # (N, rank); scaled while small
        return (h @ self.B).reshape(*lead, self.out_dim)          # (..., out)

    def delta_weight(self) -> np.ndarray:
        """The update in the Linear's layout: alpha * (A @ B)^T, (out, in)."""
        return (self.alpha * (self.A.data @ self.B.data)).T.astype(self.A.dtype)

    def extra_repr(self):
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, rank={self.rank}, alpha={self.alpha:g}"


class LinearWithLoRA(Module):
    """A Linear plus a LoRALayer of the same shape, summed: linear(x) + lora(x)."""

    def __init__(self, linear: Linear, rank: int, alpha: float):
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha,
                              dtype=linear.weight.dtype)

    # read-only views of the wrapped Linear, so code that inspects `layer.weight` keeps working
    in_features = property(lambda self: self.linear.in_features)
    out_features = property(lambda self: self.linear.out_features)
    weight = property(lambda self: self.linear.weight)
    bias = property(lambda self: self.linear.bias)

    def forward(self, x):
        return self.linear(x) + self.lora(x)  # (..., out)


def _swap_child(parent: Module, name: str, new: Module) -> None:
    """Replace a child module keeping its place in the parent's order (a Sequential runs its
    children in that order; plain setattr would move the new one to the end)."""
    parent._modules[name] = new
    object.__setattr__(parent, name, new)


def replace_linear_with_lora(model: Module, rank: int, alpha: float, freeze: bool = True) -> Module:
    """Appendix E: wrap every Linear of `model` (at any depth) in a LinearWithLoRA, in place.
    With `freeze` (the book's setup) every other parameter is frozen first, so only the LoRA
    A/B matrices train. Linears already wrapped are left alone. Returns the model."""
    if isinstance(model, Linear):
        raise InputTypeError("replace_linear_with_lora works on a model containing Linear layers; "
                        "wrap a single Linear with LinearWithLoRA(linear, rank, alpha)")
    if freeze:  # everything but LoRA adapters already in the model
        adapters = {id(p) for _, layer in lora_modules(model) for p in layer.parameters()}
        for p in model.parameters():
            if id(p) not in adapters:
                p.requires_grad = False
    stack = [model]
    while stack:  # iterative walk over the module tree
        parent = stack.pop()
        for name, child in list(parent._modules.items()):
            if isinstance(child, Linear):
                _swap_child(parent, name, LinearWithLoRA(child, rank, alpha))
            elif not isinstance(child, LinearWithLoRA):
                stack.append(child)
    return model


def lora_modules(model: Module):
    """(dotted name, LoRALayer) pairs of the model."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALayer)]


def lora_state_dict(model: Module) -> "OrderedDict[str, np.ndarray]":
    """Only the LoRA parameters, {name: copy of the array}, e.g. 'out_head.lora.A'."""
    sd = OrderedDict()
    for prefix, layer in lora_modules(model):
        for name, param in layer._parameters.items():
            sd[f"{prefix}.{name}"] = param.data.copy()
    if not sd:
        raise InputError(f"{type(model).__name__} has no LoRA layers: call "
                         "replace_linear_with_lora(model, rank, alpha) first")
    return sd


def load_lora_state_dict(model: Module, state_dict) -> None:
    """Copy `lora_state_dict` arrays back into a model with the same LoRA layers. Checks every
    name and shape first (missing, unexpected, mismatched are listed in one ValueError)."""
    own = OrderedDict((f"{prefix}.{name}", p) for prefix, layer in lora_modules(model)
                      for name, p in layer._parameters.items())
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f"{k}: given {tuple(np.shape(state_dict[k]))} vs model {own[k].shape}"
                  for k in own if k in state_dict and tuple(np.shape(state_dict[k])) != own[k].shape]
    problems = [f"{what}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
                for what, keys in (("missing LoRA keys", missing), ("unexpected keys", unexpected),
                                   ("shape mismatches (another rank?)", mismatched)) if keys]
    if problems:
        raise InputError("load_lora_state_dict failed: " + " | ".join(problems))
    for k, p in own.items():
        p.data = np.array(state_dict[k], dtype=p.dtype, copy=True)


def save_lora(path, model: Module) -> pathlib.Path:
    """Write the LoRA parameters (with rank and alpha in the metadata) to a .safetensors file,
    atomically (tinygpt.files.atomic_write)."""
    from safetensors import numpy as safetensors_numpy
    layers = lora_modules(model)
    sd = lora_state_dict(model)
    meta = {"format": "tinygpt-lora", "rank": str(layers[0][1].rank),
            "alpha": repr(layers[0][1].alpha)}
    path = pathlib.Path(path)
    with atomic_write(path, "wb") as f:
        f.write(safetensors_numpy.save({k: np.ascontiguousarray(v) for k, v in sd.items()},
                                       metadata=meta))
    return path


def load_lora(path, model: Module) -> dict:
    """Load adapters written by `save_lora` into a model prepared with the same
    replace_linear_with_lora(rank, alpha); returns the file's metadata (rank, alpha)."""
    from safetensors import safe_open
    from safetensors.numpy import load_file
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file {path} does not exist")
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "tinygpt-lora":
        raise InputError(f"{path} is not a tinygpt LoRA file (format {meta.get('format')!r})")
    load_lora_state_dict(model, load_file(str(path)))
    return {"rank": int(meta["rank"]), "alpha": float(meta["alpha"])}


def merge_lora(model: Module) -> Module:
    """Fold every LinearWithLoRA into its Linear, W <- W + alpha * (A @ B)^T, and put the plain
    Linear back in its place: the model computes the same function with one matmul per layer and
    its state dict has the base model's names again. A weight shared with another parameter
    (e.g. out_head tied to tok_emb) is copied first, so the other user is left unchanged.
    In place; returns the model."""
    shared = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        shared[id(p)] = shared.get(id(p), 0) + 1
    stack = [model]
    while stack:
        parent = stack.pop()
        for name, child in list(parent._modules.items()):
            if not isinstance(child, LinearWithLoRA):
                stack.append(child)
                continue
            linear, weight = child.linear, child.linear.weight
            merged = weight.data + child.lora.delta_weight()  # (out, in)
            if shared.get(id(weight), 0) > 1:  # tied: give this Linear its own weight
                own = Parameter(merged, requires_grad=weight.requires_grad)
                linear._parameters["weight"] = own  # same place in the state-dict order
                object.__setattr__(linear, "weight", own)
            else:  # in place, as an optimizer step would (a packed weight stays a view)
                np.copyto(weight.data, merged)
            _swap_child(parent, name, linear)
    return model
