"""`quantize(model, fmt)`: a model's Linear and Embedding weights held as bf16 or q8, ready to
generate. The book's classes stay as they are: quantizing puts a QuantLinear in place of each
Linear and a QuantEmbedding in place of each Embedding (layers.py), then readies the model as
`tinygpt.model.for_inference` does and gives each fast twin a QuantPacked for its packed group.

    model = quantize(load_pretrained("Qwen/Qwen3-0.6B"), "q8")
    model = load_pretrained("Qwen/Qwen3-0.6B", dtype="bf16")   # bf16 straight from the file

A tied output head (out_head.weight IS tok_emb.weight) stays tied: both layers hold one
QuantWeight. Norm scales, biases and GPT-2's position table stay float32 Parameters (small).
`source(name)`, when given, supplies a layer's QuantWeight from elsewhere (the loader reads bf16
bits or a saved q8 file straight into it: no float32 copy of the model is ever made); None
means "quantize the float weight the layer holds".

The model is for inference from then on: no parameter requires a gradient, and training it
raises no error but changes nothing in the quantized weights.
"""
import numpy as np

from ..model import for_inference
from ..model.packing import PackedLinears
from ..nn import Embedding, Linear, Module
from .layers import QuantEmbedding, QuantLinear, QuantPacked
from .weights import QuantError, QuantWeight, check_blocks, check_format

SCALES = ".q8_scales"  # a saved q8 weight `name` has its scales under `name + SCALES`


def _targets(model: Module):
    """[(parent, attribute, full name, layer)] for every Linear and Embedding (exact types)."""
    found, stack = [], [("", model)]
    while stack:
        prefix, parent = stack.pop()
        for name, child in parent._modules.items():
            full = f"{prefix}{name}"
            if type(child) in (Linear, Embedding):
                found.append((parent, name, full, child))
            else:
                stack.append((full + ".", child))
    return found


def quantize(model: Module, fmt: str, source=None) -> Module:
    """Replace every Linear and Embedding of `model` by its quantized stand-in in format `fmt`
    ("bf16" or "q8"), in place, and ready the model for generation; returns it. Raises
    QuantError before changing anything for an unknown format, a model with no Linear layer,
    or (q8) a layer whose input size is not a multiple of 32."""
    check_format(fmt)
    if not isinstance(model, Module):
        raise QuantError(f"quantize takes a tinygpt model, got {type(model).__name__}")
    targets = _targets(model)
    if not any(type(layer) is Linear for *_, layer in targets):
        kinds = sorted({type(m).__name__ for m in model.modules() if isinstance(m, (QuantLinear, QuantEmbedding))})
        raise QuantError(f"{type(model).__name__} has no Linear layer to quantize"
                         + (" (it is quantized already)" if kinds else ""))
    if fmt == "q8":
        for _, _, name, layer in targets:
            check_blocks(layer.weight.shape, f"{name} ({type(layer).__name__})")
    made = {}  # id(Parameter) -> QuantWeight: a tied weight is quantized once and shared
    for parent, attr, name, layer in targets:
        weight = made.get(id(layer.weight))
        if weight is None:
            weight = source(f"{name}.weight") if source is not None else None
            weight = weight if weight is not None else QuantWeight.from_float(layer.weight.data, fmt)
            made[id(layer.weight)] = weight
        stand_in = (QuantLinear(weight, layer.bias) if type(layer) is Linear
                    else QuantEmbedding(weight))
        parent._modules[attr] = stand_in   # same name, same place (Sequential runs in this order)
        object.__setattr__(parent, attr, stand_in)
    del made, targets, layer, weight, stand_in  # else packing below would hold every group's separate arrays till the end
    model.requires_grad_(False)
    model.to(np.float32)                 # what is left: norms, biases, positions (small)
    return _pack(for_inference(model).eval())


def _pack(model: Module) -> Module:
    """Give every fast twin a QuantPacked where it holds a PackedLinears."""
    for module in model.modules():
        for attr, value in list(vars(module).items()):
            if isinstance(value, PackedLinears):
                object.__setattr__(module, attr, QuantPacked(module, value.names))
    return model


def quantized_format(model: Module):
    """"bf16" or "q8" for a quantized model, None for a float one."""
    for module in model.modules():
        if isinstance(module, (QuantLinear, QuantEmbedding)):
            return module.weight.fmt
    return None


def quantized_tensors(model: Module) -> dict:
    """{book name: array} of every weight of a quantized model, to save: each QuantWeight as its
    data (uint16 bits or int8) and, for q8, `name + SCALES`; a tied weight once, under its first
    name; every other Parameter as it is."""
    out, seen = {}, set()
    for name, module in model.named_modules():
        if isinstance(module, (QuantLinear, QuantEmbedding)):
            weight = module.weight
            if id(weight) in seen:       # tied: out_head holds tok_emb's QuantWeight
                continue
            seen.add(id(weight))
            out[f"{name}.weight"] = weight.data
            if weight.scales is not None:
                out[f"{name}.weight{SCALES}"] = weight.scales
    for name, param in model.named_parameters():
        out[name] = param.data
    return out


def q8_from_entries(name: str, weight_entry: dict, scale_entry: dict | None, where) -> None:
    """Check one saved q8 weight's header entries: int8 (N, K), K a multiple of 32, and float32
    scales (N, K // 32). Raises QuantError naming the tensor."""
    shape = weight_entry["shape"]
    if weight_entry["tag"] != "I8":
        raise QuantError(f"{where}: q8 tensor {name} is {weight_entry['tag']}, not I8")
    if scale_entry is None:
        raise QuantError(f"{where}: q8 tensor {name} has no scales ({name}{SCALES})")
    if len(shape) != 2 or shape[1] % 32:
        raise QuantError(f"{where}: q8 tensor {name} has shape {shape}: not (rows, a multiple of 32)")
    want = (shape[0], shape[1] // 32)
    if scale_entry["tag"] != "F32" or tuple(scale_entry["shape"]) != want:
        raise QuantError(f"{where}: {name}{SCALES} is {scale_entry['tag']} {tuple(scale_entry['shape'])}; "
                         f"q8 {name} {tuple(shape)} needs F32 {want} (one scale per block of 32)")


def check_bf16_entries(tensors: dict, where) -> None:
    """A folder saved as bf16 holds every weight matrix as BF16 ({name: (file, header entry,
    start)}; 1-D norms may be float): a QuantError names the first that is not."""
    for name, (_, entry, _) in tensors.items():
        if len(entry["shape"]) == 2 and entry["tag"] != "BF16":
            raise QuantError(f"{where}: tensor {name} is {entry['tag']}, but the files say they hold "
                             f"bf16 weights (BF16)")
