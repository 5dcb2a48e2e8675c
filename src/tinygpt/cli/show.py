"""`tinygpt show` and `tinygpt export`: look at a checkpoint afterwards, and keep only its model.
Both take the checkpoint file or the run folder holding it (`model.safetensors`), as generate and
chat do."""
import pathlib

from . import command


def _mb(n) -> str:
    return f"{n / 1e6:,.1f} MB"


@command("show", "print what a checkpoint holds: config, progress, final losses, sizes")
def _show(sub):
    sub.add_argument("checkpoint", help="a checkpoint written by pretrain, finetune-* or export")
    sub.add_argument("--plot", metavar="PNG", help="also re-draw its loss curve into this file")

    def run(args):
        from ..train import checkpoint_info
        info = checkpoint_info(checkpoint_file(args.checkpoint))
        for line in describe(info):
            print(line)
        if args.plot:
            print(f"loss plot: {plot_history(info, args.plot)}")
    return run


def checkpoint_file(source) -> pathlib.Path:
    """The checkpoint `source` names: the file itself, or `model.safetensors` in a run folder."""
    from ..errors import InputError
    from .models import CHECKPOINT_FILE
    path = pathlib.Path(source)
    if path.is_dir():
        if not (path / CHECKPOINT_FILE).is_file():
            raise InputError(f"{source} is a folder without a {CHECKPOINT_FILE}; give a checkpoint "
                             "file or the run folder that holds one")
        return path / CHECKPOINT_FILE
    return path


def describe(info) -> list:
    """The lines `tinygpt show` prints for `checkpoint_info`'s dict."""
    lines = [f"checkpoint: {info['path']} ({_mb(info['file_bytes'])}, {info['kind'] or 'model'})"]
    cfg = info["config"] or {}
    lines.append("config: " + ", ".join(f"{k}={v}" for k, v in cfg.items()))
    if info["steps"] is not None:
        lines.append(f"trained: {info['epochs']} epochs, {info['steps']} steps, "
                     f"{info['tokens']:,} tokens")
    if info["final_train_loss"] is not None:
        lines.append(f"final losses: train {info['final_train_loss']:.3f}, "
                     f"val {info['final_val_loss']:.3f} ({len(info['train_losses'])} evaluations)")
    lines.append(f"model: {info['model_tensors']} tensors, {_mb(info['model_bytes'])}")
    if info["has_optimizer"]:
        lines.append(f"optimizer state: {info['optimizer_tensors']} tensors, "
                     f"{_mb(info['optimizer_bytes'])} (resumable; `tinygpt export` drops it)")
    else:
        lines.append("optimizer state: none (inference only)")
    return lines


def plot_history(info, path):
    """The loss curve of the run, from the history the checkpoint holds."""
    from ..errors import InputError
    from ..train.plotting import plot_losses
    if not info["train_losses"]:
        raise InputError(f"{info['path']} holds no loss history to plot")
    per_epoch = info["tokens"] / info["epochs"] if info.get("epochs") else None
    seen = info["tokens_seen"]
    epochs = [t / per_epoch for t in seen] if per_epoch else list(range(len(seen)))
    return plot_losses(epochs, seen, info["train_losses"], info["val_losses"], path)


@command("export", "write a checkpoint's model without its optimizer state (a third of the size)")
def _export(sub):
    sub.add_argument("checkpoint", help="a checkpoint written by pretrain or finetune-instruct")
    sub.add_argument("out", help="the model-only .safetensors file to write")

    def run(args):
        from ..errors import InputError
        from ..train import checkpoint_info, export_model
        source, out = checkpoint_file(args.checkpoint), pathlib.Path(args.out)
        if out.is_dir():
            raise InputError(f"export: {out} is a folder; give the .safetensors file to write")
        if out.resolve() == source.resolve() or (out.exists() and source.exists()
                                                 and out.samefile(source)):  # a link to it
            raise InputError(f"export would overwrite its checkpoint {source} (and drop its "
                             "optimizer state); give another output file")
        out = export_model(source, out)
        print(f"{out} ({_mb(checkpoint_info(out)['file_bytes'])}, model only)")
    return run
