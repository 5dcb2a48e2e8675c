"""The loop state a checkpoint carries, and the checks that make `--resume` continue the run it
says it continues (same model config, same batches per epoch, same settings) or refuse with the
reason.

The rule for settings (lr, weight decay, seed, batch size, schedule and its parameters, ...): a
resumed run continues with the checkpoint's. One left out takes the checkpoint's value
(`resolve_settings`); one given with another value is refused, naming the setting and both values
(`check_same_settings`): to change it, start a new run. The number of epochs may grow (the run
continues up to it) unless a schedule is on, whose cosine spans all of them."""
import numbers

from ..errors import CheckpointError, InputError

HISTORY = ("train_losses", "val_losses", "tokens_seen", "lrs")


def fresh_loop_state(peak_lr: float, steps_per_epoch: int) -> dict:
    """The state of a run before its first step. It always describes the last *completed* step:
    `batch` batches of epoch `epoch` done, `global_step` the index of the last one (-1: none),
    `pending_eval` set when that step's evaluation is still to do."""
    return {"epoch": 0, "batch": 0, "global_step": -1, "tokens": 0, "peak_lr": peak_lr,
            "steps_per_epoch": steps_per_epoch, "pending_eval": False,
            "train_losses": [], "val_losses": [], "tokens_seen": [], "lrs": []}


def checked_loop_state(saved, where, steps_per_epoch: int) -> dict:
    """The saved loop state, checked key by key; a loader of another length is refused."""
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where} records no training loop state: it cannot be resumed")
    counts = {"epoch": 0, "batch": 0, "global_step": -1, "tokens": 0}
    problems = [f"{k}={saved.get(k)!r} is not an int >= {low}" for k, low in counts.items()
                if not _is_int(saved.get(k)) or saved[k] < low]
    if not isinstance(saved.get("peak_lr"), numbers.Real) or isinstance(saved.get("peak_lr"), bool):
        problems.append(f"peak_lr={saved.get('peak_lr')!r} is not a number")
    for k in HISTORY:
        values = saved.get(k)
        if not (isinstance(values, list) and all(isinstance(v, numbers.Real) for v in values)):
            problems.append(f"{k} is not a list of numbers")
    if not isinstance(saved.get("pending_eval", False), bool):
        problems.append("pending_eval is not true/false")
    if problems:
        raise CheckpointError(f"{where}: bad training loop state: {'; '.join(problems)}")
    saved_steps = saved.get("steps_per_epoch", steps_per_epoch)
    if saved_steps != steps_per_epoch or saved["batch"] > steps_per_epoch:
        raise InputError(f"{where} was trained with {saved_steps} batches per epoch, this run has "
                         f"{steps_per_epoch}: resume with the same text, batch size and context length")
    return {**fresh_loop_state(saved["peak_lr"], steps_per_epoch), **saved}


def config_differences(saved: dict, given: dict) -> list:
    """["key: checkpoint A, given B", ...] for every key whose values differ."""
    keys = sorted(set(saved) | set(given))
    return [f"{k}: checkpoint {saved.get(k, '(absent)')!r}, given {given.get(k, '(absent)')!r}"
            for k in keys if saved.get(k, _ABSENT) != given.get(k, _ABSENT)]


def check_same_config(saved, given, where) -> None:
    """Raise InputError naming each differing key (both values) unless the configs agree."""
    if saved is None or given is None:
        return
    diffs = config_differences(saved, given)
    if diffs:
        raise InputError(f"{where} was trained with another model config ({'; '.join(diffs)}): "
                         "resume without a config to use the checkpoint's, or start a new run")


_ABSENT = object()

FLAGS = {"lr": "--lr", "weight_decay": "--weight-decay", "seed": "--seed", "batch_size": "--batch-size",
         "schedule": "--schedule", "eval_freq": "--eval-freq", "eval_iter": "--eval-iter",
         "num_epochs": "--epochs"}


def run_settings(s: dict, optimizer, extra=None) -> dict:
    """The settings of a `train_model` run (its settings dict `s`) that shape its result."""
    group = optimizer.param_groups[0]
    settings = {"lr": group["lr"], "weight_decay": group.get("weight_decay"),
                "schedule": bool(s["schedule"]), "num_epochs": s["num_epochs"],
                "eval_freq": s["eval_freq"], "eval_iter": s["eval_iter"]}
    if s["schedule"]:
        settings.update({k: s[k] for k in ("warmup_steps", "initial_lr", "min_lr", "max_grad_norm")})
    return {**settings, **(extra or {})}


def check_same_settings(saved, given: dict, where) -> None:
    """Raise InputError naming every setting of `given` that differs from the checkpoint's
    (`num_epochs` only under a schedule). A checkpoint older than recorded settings passes."""
    if not isinstance(saved, dict):
        return
    diffs = [f"{k}{' (' + FLAGS[k] + ')' if k in FLAGS else ''}: checkpoint {saved[k]!r}, given {v!r}"
             for k, v in given.items() if k in saved and saved[k] != v
             and (k != "num_epochs" or saved.get("schedule"))]
    if diffs:
        raise InputError(f"{where} was trained with other settings ({'; '.join(diffs)}): a resumed "
                         "run continues with the checkpoint's settings, so leave these out (or give "
                         "the checkpoint's values), or start a new run without resuming")


def resolve_settings(given: dict, saved, defaults: dict, where) -> dict:
    """Each setting: the given value (not None), else the checkpoint's, else the default; a given
    value that differs from the checkpoint's is refused (`check_same_settings`)."""
    saved = saved if isinstance(saved, dict) else {}
    check_same_settings(saved, {k: v for k, v in given.items() if v is not None}, where)
    return {k: v if v is not None else saved.get(k, defaults[k]) for k, v in given.items()}


def describe_settings(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
