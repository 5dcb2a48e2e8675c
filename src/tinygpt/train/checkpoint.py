"""Training checkpoints: one `.safetensors` file holding model and optimizer arrays, with the
rest (config, step, epoch, loss history, RNG state) as JSON in the file's metadata.

Layout: tensors `model.<name>` (every state_dict entry) and `optim.<param index>.<state key>`;
metadata keys `format` = "tinygpt-checkpoint", `version`, and `state` (a JSON document).
Saving (`weights.save_safetensors`) writes a temporary file beside the target, syncs it to disk
and renames it over the target, so a save killed midway leaves the previous checkpoint intact;
loading removes the temporaries such killed saves left behind.

Loading checks everything before building or touching a model: the header and the state JSON
(`read_checkpoint_header`, which reads no tensor data), the recorded config against the shapes
of the tensors actually present (`check_config_fits`, on every path: a config claiming a vocabulary
of millions beside a small file is refused before anything is allocated for it), then names and
shapes, then the values: a NaN or inf weight or optimizer moment (an inf Adam moment freezes its
parameter silently) and an optimizer `step` that is not an int >= 0 are refused, naming the
tensor. No save writes such values either (`guard.check_finite_state`). Tensors are memory
mapped, so reading only the model (`read_checkpoint(path, optimizer=False)`, `load_model`) never
reads the optimizer's two moments, twice the model's size."""
import json
import pathlib
import tempfile

import numpy as np

from ..errors import CheckpointError, InputError, MissingFileError
from ..files import remove_stale_temps
from ..model.gpt import GPTModel
from ..weights.safetensors_io import SafetensorsError, load_safetensors, read_header, save_safetensors
from .guard import check_finite_state, non_finite_names

FORMAT, VERSION = "tinygpt-checkpoint", 1
CONFIG_COUNTS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")


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
    check_finite_state(tensors.items(), f"the checkpoint to save as {path}")
    remove_stale_temps(path)
    save_safetensors(tensors, path, metadata=_metadata(state))
    return path


def _metadata(state: dict) -> dict:
    return {"format": FORMAT, "version": str(VERSION), "state": json.dumps(state)}


def read_checkpoint_header(path):
    """-> ({tensor name: header entry}, state dict), reading no tensor data. Raises
    CheckpointError for a truncated, corrupt or foreign file or a garbled state, and
    FileNotFoundError for a missing one. Removes stale temporaries of killed saves of `path`."""
    path = pathlib.Path(path)
    remove_stale_temps(path)
    if not path.is_file():
        raise (InputError(f"checkpoint {path} is a folder, not a checkpoint file") if path.is_dir()
               else MissingFileError(f"checkpoint {path} does not exist"))
    try:
        entries, metadata, _ = read_header(path)
    except SafetensorsError as err:
        raise CheckpointError(f"{path} is not a readable tinygpt checkpoint (truncated or "
                              f"corrupt?): {err}") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a tinygpt checkpoint "
                              f"(format {metadata.get('format')!r})")
    if metadata.get("version") != str(VERSION):
        raise CheckpointError(f"{path}: checkpoint version {metadata.get('version')} is not "
                              f"supported (this tinygpt reads version {VERSION})")
    return entries, _parse_state(path, metadata.get("state"))


def _parse_state(path, raw) -> dict:
    """The state JSON, checked for the shape every reader relies on."""
    try:
        state = json.loads(raw)
    except (TypeError, ValueError, RecursionError) as err:  # RecursionError: nested too deeply
        raise CheckpointError(f"{path}: the recorded state is not valid JSON "
                              f"({type(err).__name__}: {str(err)[:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the recorded state is a {type(state).__name__}, not a JSON object")
    kinds = {"config": dict, "loop": dict, "rng": dict, "tied": dict, "optimizer": dict,
             "settings": dict}
    for key, kind in kinds.items():
        if state.get(key) is None and key == "config":
            state.pop(key, None)  # saved without one (train_model's config=None)
        elif key in state and not isinstance(state[key], kind):
            raise CheckpointError(f"{path}: state[{key!r}] is a {type(state[key]).__name__}, "
                                  f"not a JSON object")
    tied = state.get("tied", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in tied.items()):
        raise CheckpointError(f"{path}: state['tied'] must map tensor names to tensor names")
    opt = state.get("optimizer")
    if opt is not None and not (isinstance(opt.get("param_groups"), list)
                                and isinstance(opt.get("scalars"), dict)
                                and all(isinstance(s, dict) and k.isdigit()
                                        for k, s in opt["scalars"].items())):
        raise CheckpointError(f"{path}: state['optimizer'] lacks param_groups (a list) or "
                              "scalars (an object per parameter index)")
    return state


def check_config(cfg, where, error=CheckpointError) -> dict:
    """Raise `error` unless `cfg` is a usable GPTModel config; returns it."""
    if not isinstance(cfg, dict):
        raise error(f"{where}: the config is a {type(cfg).__name__}, not an object")
    problems = [f"{k} is missing" for k in (*CONFIG_COUNTS, "drop_rate", "qkv_bias") if k not in cfg]
    problems += [f"{k}={cfg[k]!r} is not a positive int" for k in CONFIG_COUNTS if k in cfg
                 and (isinstance(cfg[k], bool) or not isinstance(cfg[k], int) or cfg[k] < 1)]
    rate = cfg.get("drop_rate", 0.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        problems.append(f"drop_rate={rate!r} is not a number in [0, 1)")
    if not isinstance(cfg.get("qkv_bias", False), bool):
        problems.append(f"qkv_bias={cfg['qkv_bias']!r} is not true/false")
    if not problems and cfg["emb_dim"] % cfg["n_heads"]:
        problems.append(f"emb_dim {cfg['emb_dim']} is not divisible by n_heads {cfg['n_heads']}")
    if problems:
        raise error(f"{where}: bad model config: {'; '.join(problems)}")
    return cfg


def check_config_fits(cfg, entries, path) -> dict:
    """Check the recorded config against the tensors the file holds (their header shapes), so a
    lying config cannot make us build a model far larger than the file before anything fails."""
    check_config(cfg, path)
    vocab, ctx, emb = cfg["vocab_size"], cfg["context_length"], cfg["emb_dim"]
    problems = []
    for name, want in (("tok_emb.weight", (vocab, emb)), ("pos_emb.weight", (ctx, emb))):
        entry = entries.get(f"model.{name}")
        if entry is None:
            problems.append(f"no tensor {name}")
        elif tuple(entry["shape"]) != want:
            problems.append(f"{name} is {tuple(entry['shape'])}, the config needs {want}")
    blocks = {k.split(".")[2] for k in entries if k.startswith("model.trf_blocks.")}
    if len(blocks) != cfg["n_layers"]:
        problems.append(f"{len(blocks)} transformer blocks, the config says n_layers={cfg['n_layers']}")
    has_bias = "model.trf_blocks.0.att.W_query.bias" in entries
    if blocks and has_bias != cfg["qkv_bias"]:
        problems.append(f"qkv_bias={cfg['qkv_bias']} but the query bias is "
                        f"{'present' if has_bias else 'absent'}")
    if problems:
        raise CheckpointError(f"{path}: the recorded config does not fit the tensors in the file: "
                              + "; ".join(problems))
    return cfg


def read_checkpoint(path, optimizer: bool = True):
    """-> (model_state_dict, optimizer_state_dict or None, state dict). The arrays are read-only
    views of the memory-mapped file; only the ones used are read from disk. `optimizer=False`
    leaves the optimizer state out. Raises CheckpointError (a ValueError) for a truncated,
    corrupt or foreign file, FileNotFoundError for a missing one."""
    path = pathlib.Path(path)
    entries, state = read_checkpoint_header(path)
    if "config" in state:  # before any tensor is read or anything built for the config
        check_config_fits(state["config"], entries, path)
    tensors = load_safetensors(path) if entries else {}
    wanted = ("model.", "optim.") if optimizer else ("model.",)
    _check_finite(path, ((k, v) for k, v in tensors.items() if k.startswith(wanted)))
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    for alias, source in state.pop("tied", {}).items():
        if source not in model_sd:
            raise CheckpointError(f"{path}: tied tensor {alias} names {source}, which is not in the file")
        model_sd[alias] = model_sd[source]
    saved = state.pop("optimizer", None)
    if saved is None or not optimizer:
        return model_sd, None, state
    entries = {int(i): dict(s) for i, s in saved["scalars"].items()}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, key = k.split(".", 2)
            if not i.isdigit():
                raise CheckpointError(f"{path}: optimizer tensor {k} has no parameter index")
            entries.setdefault(int(i), {})[key] = v
    for i, entry in entries.items():
        step = entry.get("step", 0)
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise CheckpointError(f"{path}: optimizer state {i} has step={repr(step)[:50]}, "
                                  "not an int >= 0")
    return model_sd, {"state": entries, "param_groups": saved["param_groups"]}, state


def _check_finite(path, named_arrays) -> None:
    bad = non_finite_names(named_arrays)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise CheckpointError(f"{path}: tensor {bad[0]} holds NaN or inf values{more}; a run "
                              "that diverged cannot be loaded or resumed (use an earlier checkpoint)")


def load_checkpoint(path, model, optimizer=None) -> dict:
    """Load a checkpoint into `model` (and `optimizer`); returns the saved training state."""
    model_sd, optim_sd, state = read_checkpoint(path, optimizer=optimizer is not None)
    if optimizer is not None and optim_sd is None:
        raise CheckpointError(f"{path} holds no optimizer state to resume from (a model-only export?)")
    previous = optimizer.state_dict() if optimizer is not None else None
    if optimizer is not None:
        try:  # validates against the parameters before copying
            optimizer.load_state_dict(optim_sd)
        except (KeyError, TypeError, InputError) as err:
            raise CheckpointError(f"{path}: the optimizer state does not fit: {err}") from None
    try:
        model.load_state_dict(model_sd)  # validates every name and shape before copying
    except ValueError:
        if optimizer is not None:
            optimizer.load_state_dict(previous)
        raise
    return state


def load_model(path):
    """-> (GPTModel in eval mode, state): the model a checkpoint records, built only after its
    config was checked against the file's tensor shapes; optimizer arrays are never read."""
    entries, state = read_checkpoint_header(path)
    if "config" not in state:
        raise CheckpointError(f"{path} records no model config")
    model = GPTModel(check_config_fits(state["config"], entries, path))
    model_sd, _, state = read_checkpoint(path, optimizer=False)
    model.load_state_dict(model_sd)
    model.eval()
    return model, state


def export_model(checkpoint, out_path) -> pathlib.Path:
    """Write the model of `checkpoint` without its optimizer state (a third of the size) to
    `out_path`: `load_model`, `generate` and `checkpoint_info` read it; it cannot be resumed."""
    entries, state = read_checkpoint_header(checkpoint)
    if "config" in state:
        check_config_fits(state["config"], entries, checkpoint)
    tensors = {k: v for k, v in load_safetensors(checkpoint).items() if k.startswith("model.")}
    _check_finite(checkpoint, tensors.items())
    state.pop("optimizer", None)
    out_path = pathlib.Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_path)
    save_safetensors(tensors, out_path, metadata=_metadata(state))
    return out_path


def checkpoint_info(path) -> dict:
    """What a checkpoint holds, from its header alone (no tensor data is read): config, kind,
    completed epochs and steps, tokens seen, loss/lr histories and final losses, file size, and
    tensor count and bytes of the model and of the optimizer state."""
    path = pathlib.Path(path)
    entries, state = read_checkpoint_header(path)
    loop = state.get("loop", {})

    def total(prefix):
        found = [e for k, e in entries.items() if k.startswith(prefix)]
        return len(found), sum(e["end"] - e["begin"] for e in found)

    (n_model, model_bytes), (n_optim, optim_bytes) = total("model."), total("optim.")
    history = {k: loop.get(k, []) for k in ("train_losses", "val_losses", "tokens_seen", "lrs")}
    steps = loop.get("global_step")
    return {"path": str(path), "file_bytes": path.stat().st_size, "config": state.get("config"),
            "kind": state.get("kind", "pretrain" if "loop" in state else None),
            "epochs": loop.get("epoch"), "steps": steps + 1 if isinstance(steps, int) else None,
            "tokens": loop.get("tokens"), **history,
            "final_train_loss": (history["train_losses"] or [None])[-1],
            "final_val_loss": (history["val_losses"] or [None])[-1],
            "model_tensors": n_model, "model_bytes": model_bytes,
            "optimizer_tensors": n_optim, "optimizer_bytes": optim_bytes,
            "has_optimizer": "optimizer" in state}


def check_writable(path) -> pathlib.Path:
    """Raise InputError now, before any training, if a file cannot be written at `path`."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a directory")
    for parent in (path.parent, *path.parent.parents):
        if parent.exists() and not parent.is_dir():
            raise InputError(f"cannot write {path}: {parent} is a file, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from None
    return path


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
