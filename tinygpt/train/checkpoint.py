"""Training checkpoints: one `.safetensors` file holding model and optimizer arrays, with the
rest (config, step, epoch, loss history, RNG state) as JSON in the file's metadata.

Layout: tensors `model.<name>` (every state_dict entry) and `optim.<param index>.<state key>`;
metadata keys `format` = "tinygpt-checkpoint", `version`, and `state` (a JSON document).
Saving (`weights.save_safetensors`) writes a temporary file beside the target, syncs it to disk
and renames it over the target, so a save killed midway leaves the previous checkpoint intact.
Loading checks everything before touching the model, so a bad file never leaves a half-loaded
model."""
import json
import pathlib

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from ..weights.safetensors_io import save_safetensors
from ..errors import InputError

FORMAT, VERSION = "tinygpt-checkpoint", 1


def save_checkpoint(path, model, optimizer=None, **state) -> pathlib.Path:
    """Write model (+ optimizer) arrays and JSON-serialisable `state` to `path` atomically."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in _unique_arrays(model.state_dict())}
    if optimizer is not None:
        opt_state = optimizer.state_dict(copy=False)  # written straight from the live arrays
        for i, entries in opt_state["state"].items():
            for key, value in entries.items():
                if isinstance(value, np.ndarray):
                    tensors[f"optim.{i}.{key}"] = value
        state["optimizer"] = {
            "param_groups": opt_state["param_groups"],
            "scalars": {str(i): {k: v for k, v in e.items() if not isinstance(v, np.ndarray)}
                        for i, e in opt_state["state"].items()}}
    state["tied"] = _tied_names(model)
    metadata = {"format": FORMAT, "version": str(VERSION), "state": json.dumps(state)}
    save_safetensors(tensors, path, metadata=metadata)
    return path


def read_checkpoint(path):
    """-> (model_state_dict, optimizer_state_dict or None, state dict). Raises ValueError for a
    truncated, corrupt or foreign file, FileNotFoundError for a missing one."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"{path} is not a readable tinygpt checkpoint (truncated or corrupt?): {err}") from None
    if metadata.get("format") != FORMAT:
        raise InputError(f"{path} is a safetensors file but not a tinygpt checkpoint "
                         f"(format {metadata.get('format')!r})")
    if metadata.get("version") != str(VERSION):
        raise InputError(f"{path}: checkpoint version {metadata.get('version')} is not supported "
                         f"(this tinygpt reads version {VERSION})")
    state = json.loads(metadata["state"])
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    for alias, source in state.pop("tied", {}).items():
        model_sd[alias] = model_sd[source]
    optim_sd = None
    if "optimizer" in state:
        saved = state.pop("optimizer")
        entries = {int(i): dict(s) for i, s in saved["scalars"].items()}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, i, key = k.split(".", 2)
                entries.setdefault(int(i), {})[key] = v
        optim_sd = {"state": entries, "param_groups": saved["param_groups"]}
    return model_sd, optim_sd, state


def load_checkpoint(path, model, optimizer=None) -> dict:
    """Load a checkpoint into `model` (and `optimizer`); returns the saved training state."""
    model_sd, optim_sd, state = read_checkpoint(path)
    if optimizer is not None and optim_sd is None:
        raise InputError(f"{path} holds no optimizer state to resume from")
    previous = optimizer.state_dict() if optimizer is not None else None
    if optimizer is not None:
        optimizer.load_state_dict(optim_sd)  # validates against the parameters before copying
    try:
        model.load_state_dict(model_sd)  # validates every name and shape before copying
    except ValueError:
        if optimizer is not None:
            optimizer.load_state_dict(previous)
        raise
    return state


def _tied_names(model) -> dict:
    """Names whose parameter is the same object as an earlier name's (e.g. out_head -> tok_emb)."""
    first, tied = {}, {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            tied[name] = first[id(p)]
        else:
            first[id(p)] = name
    return tied


def _unique_arrays(state_dict):
    seen = set()
    for k, v in state_dict.items():
        if id(v) not in seen:
            seen.add(id(v))
            yield k, v
