"""The book's chapter-5 pretraining run as one function, shared by `examples/ch05_pretrain.py`
and `tinygpt pretrain`: split a text 90/10, build the sliding-window loaders, train a GPT with
AdamW, then save the checkpoint and the loss plot."""
import hashlib
import json
import pathlib

from ..core.random import manual_seed
from ..data import create_dataloader_v1
from ..model import GPT_CONFIG_124M, GPTModel, for_training
from ..optim import AdamW
from ..tokenizer import get_gpt2_tokenizer
from ..errors import InputError
from .checkpoint import check_config, check_config_fits, check_writable, read_checkpoint_header
from .trainer import check_counts, train_model
from .plotting import plot_losses
from .resume import check_same_config, resolve_settings

GPT2_VOCAB_SIZE = 50257  # tiktoken's gpt2 encoding, <|endoftext|> included

# Named model configurations for the command line and the benchmarks.
PRESETS = {
    # the book's chapter-5 run: GPT-2 124M with a 256-token context
    "book-124M": {**GPT_CONFIG_124M, "context_length": 256, "drop_rate": 0.1, "qkv_bias": False},
    "small": {"vocab_size": 50257, "context_length": 128, "emb_dim": 256, "n_heads": 4,
              "n_layers": 4, "drop_rate": 0.1, "qkv_bias": False},
    "tiny": {"vocab_size": 50257, "context_length": 64, "emb_dim": 64, "n_heads": 4,
             "n_layers": 2, "drop_rate": 0.0, "qkv_bias": False},
}


def resolve_config(name_or_path) -> dict:
    """A preset name, a model_configs name ("gpt2-small (124M)" ...) or a JSON file path."""
    from ..model import model_configs
    if name_or_path in PRESETS:
        return dict(PRESETS[name_or_path])
    if name_or_path in model_configs:
        return {**GPT_CONFIG_124M, **model_configs[name_or_path], "qkv_bias": False}
    path = pathlib.Path(name_or_path)
    if path.suffix == ".json" and not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise InputError(f"config file {path} {what}")
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"config file {path} is not UTF-8 JSON: {err}") from None
    names = ", ".join(list(PRESETS) + list(model_configs))
    raise InputError(f"unknown config {name_or_path!r}: use one of {names}, or a .json file")


# The book's chapter-5 settings: pretrain's defaults for a new run (`None` arguments).
DEFAULTS = {"num_epochs": 10, "batch_size": 2, "lr": 4e-4, "weight_decay": 0.1, "train_ratio": 0.9,
            "eval_freq": 5, "eval_iter": 5, "seed": 123, "schedule": False, "grad_accum": 1}


def pretrain(text: str, cfg: dict = None, num_epochs=None, batch_size=None, lr=None,
             weight_decay=None, train_ratio=None, eval_freq=None, eval_iter=None, seed=None,
             start_context="Every effort moves you", out_dir="runs/pretrain", resume=None,
             schedule=None, quiet=False, plot=True, max_steps=None, checkpoint_every=None,
             progress=None, data_dir=None, grad_accum=None, data_parallel=None):
    """Train `GPTModel(cfg)` on `text` as the book's section 5.2 does; returns (model, result).
    Writes `model.safetensors` (a resumable checkpoint) and `loss-plot.png` into `out_dir`.
    A setting left as None is the book's (`DEFAULTS`).

    `resume` continues a checkpoint with its config and settings: `cfg=None` and settings left
    as None take the checkpoint's; a given one must equal it (InputError naming each differing
    key or setting, both values), except `num_epochs`, which counts all epochs and may grow when
    `schedule` is off. A checkpoint that already has them is left as it is
    (result["nothing_to_do"]). Every argument is checked, and `out_dir` made writable, before
    any work.

    `data_dir` (text=None): a folder of `tinygpt prepare-data` shards instead of a text, its
    training split shuffled and its validation split evaluated. `grad_accum` K: optimizer steps
    of K batches of `batch_size`, run one after another (the same step as one batch K times
    larger). `data_parallel` (tinygpt.distributed): one rank of several, each running its share
    of every batch; only rank 0 writes the checkpoint and plot and prints progress."""
    given = dict(num_epochs=num_epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                 train_ratio=train_ratio, eval_freq=eval_freq, eval_iter=eval_iter, seed=seed,
                 schedule=schedule, grad_accum=grad_accum)
    check_counts(optional=True, **{k: given[k] for k in ("num_epochs", "batch_size", "eval_freq",
                                                          "eval_iter", "grad_accum")})
    check_counts(checkpoint_every=checkpoint_every, max_steps=max_steps, optional=True)
    data_index = None
    if data_dir is not None:
        from ..data.shards import read_index
        data_index = read_index(data_dir)
    # (an index without a tokenizer or vocab_size is of GPT-2 tokens, the only kind there was)
    vocab_size = data_index.get("vocab_size", GPT2_VOCAB_SIZE) if data_index else GPT2_VOCAB_SIZE
    cfg, saved = _run_config(cfg, resume, vocab_size)
    run = _run_settings(given, saved, resume)
    num_epochs, batch_size, seed = run["num_epochs"], run["batch_size"], run["seed"]
    if data_parallel is not None and batch_size % data_parallel.size:
        raise InputError(f"the batch size {batch_size} cannot be split evenly over "
                         f"{data_parallel.size} ranks: give a multiple of {data_parallel.size}")
    checkpoint_path = check_writable(pathlib.Path(out_dir) / "model.safetensors")
    # samples need the tokenizer: GPT-2's, unless the shards hold a model's own tokens
    gpt2 = data_index is None or data_index.get("tokenizer", "gpt2") == "gpt2"
    tokenizer = get_gpt2_tokenizer() if gpt2 else None
    manual_seed(seed)
    step_batch = batch_size * run["grad_accum"]   # the windows of one optimizer step
    if data_dir is not None:   # token shards (tinygpt prepare-data), read window by window
        train_loader, val_loader, data_id = shard_loaders(data_dir, step_batch,
                                                          cfg["context_length"], seed)
    else:
        train_loader, val_loader = _loaders(text, run["train_ratio"], step_batch,
                                            cfg["context_length"], seed)
        data_id = None
    check_same_data(saved, data_id, data_dir, resume)
    manual_seed(seed)
    model = for_training(GPTModel(cfg))  # fast attention twins: same weights, masks and names
    optimizer = AdamW(model.parameters(), lr=run["lr"], weight_decay=run["weight_decay"])
    rank0 = data_parallel is None or data_parallel.rank == 0   # rank 0 alone writes and prints
    settings = {k: run[k] for k in ("seed", "batch_size", "train_ratio", "grad_accum")}
    options = dict(quiet=quiet or not rank0, checkpoint_path=checkpoint_path if rank0 else None,
                   resume_from=resume, max_steps=max_steps, checkpoint_every=checkpoint_every,
                   config=cfg, progress=progress, grad_accum=run["grad_accum"],
                   data_parallel=data_parallel,
                   settings={**settings, **({"data": data_id} if data_id else {})})
    # schedule=False trains as train_model_simple (section 5.2); True adds appendix D's extras
    result = train_model(model, train_loader, val_loader, optimizer, num_epochs, run["eval_freq"],
                         run["eval_iter"], start_context, tokenizer, schedule=run["schedule"],
                         **options)
    if result["nothing_to_do"]:
        result["checkpoint"] = pathlib.Path(resume)
        return model, result
    if plot and rank0 and result["train_losses"]:
        n = len(result["train_losses"])
        epochs = [num_epochs * i / max(n - 1, 1) for i in range(n)]
        try:
            result["plot"] = plot_losses(epochs, result["tokens_seen"], result["train_losses"],
                                         result["val_losses"], checkpoint_path.parent / "loss-plot.png")
        except ImportError as err:
            print(f"(no plot: {err})")
    result["checkpoint"] = checkpoint_path
    return model, result


def _run_settings(given: dict, saved, resume) -> dict:
    """The run's settings (see resume.resolve_settings), each checked."""
    run = resolve_settings(given, saved, DEFAULTS, resume)
    check_counts(**{k: run[k] for k in ("num_epochs", "batch_size", "eval_freq", "eval_iter",
                                         "grad_accum")})
    ratio, seed = run["train_ratio"], run["seed"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise InputError(f"train_ratio must be between 0 and 1, got {ratio!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an int, got {seed!r}")
    run["schedule"] = bool(run["schedule"])
    return run


def _run_config(cfg, resume, vocab_size=GPT2_VOCAB_SIZE):
    """-> (the model config of this run: `cfg`, or the checkpoint's when resuming without one;
    the checkpoint's recorded settings or None). `vocab_size`: the tokenizer's (GPT-2's, or
    that of the shards' tokenizer)."""
    saved_settings = None
    if resume is not None:
        entries, state = read_checkpoint_header(resume)
        saved = state.get("config")
        if cfg is None:
            if saved is None:
                raise InputError(f"{resume} records no model config: give one")
            cfg = saved
        check_same_config(saved, cfg, resume)
        check_config_fits(cfg, entries, resume)  # before building a model of that size
        saved_settings = state.get("settings")
    if cfg is None:
        raise InputError("pretrain needs a model config (cfg), unless it resumes a checkpoint")
    cfg = check_config(cfg, "the model config", error=InputError)
    if cfg["vocab_size"] < vocab_size:  # pretrain feeds it GPT-2's tokens, or the shards'
        which = "GPT-2 tokenizer's" if vocab_size == GPT2_VOCAB_SIZE else "shards' tokenizer's"
        raise InputError(f"the model config's vocab_size {cfg['vocab_size']} is smaller than the "
                         f"{which} {vocab_size} tokens that pretrain feeds it")
    return cfg, saved_settings


def _loaders(text, train_ratio, batch_size, ctx, seed):
    """The book's 90/10 split into a shuffled training loader and a validation loader."""
    if not isinstance(text, str):
        raise InputError(f"text must be a str, got {type(text).__name__}")
    split = int(train_ratio * len(text))
    try:
        train_loader = create_dataloader_v1(text[:split], batch_size=batch_size, max_length=ctx,
                                            stride=ctx, drop_last=True, shuffle=True, seed=seed)
        val_loader = create_dataloader_v1(text[split:], batch_size=batch_size, max_length=ctx,
                                          stride=ctx, drop_last=False, shuffle=False)
    except InputError as err:
        if "too short" not in str(err):
            raise
        train_loader = None
    if train_loader is None or len(train_loader) == 0:
        tokens = len(get_gpt2_tokenizer().encode(text, allowed_special={"<|endoftext|>"}))
        raise InputError(f"the text ({len(text)} characters, {tokens} tokens) is too short: its "
                         f"{train_ratio:.0%} training part must hold one batch of {batch_size} "
                         f"windows of {ctx} + 1 tokens and the rest one window for validation; "
                         "use a longer text or a smaller context/batch") from None
    return train_loader, val_loader


def check_same_data(saved_settings, data_id, data_dir, resume) -> None:
    """Refuse to resume, on other training data, a checkpoint that records its data: a --text
    run under --data, the reverse, or shards of another corpus (the message names both)."""
    if resume is None or not isinstance(saved_settings, dict):
        return   # a new run, or a checkpoint older than recorded settings
    before = saved_settings.get("data")
    if before == data_id:
        return
    was = f"--data shards of {before}" if before else "a --text file"
    now = f"--data {data_dir} ({data_id})" if data_id else "a --text file"
    raise InputError(f"{resume} was trained on {was}, and this run gives {now}: resume with the "
                     "data it was trained on, or start a new run")


def shard_loaders(data_dir, step_batch, ctx, seed):
    """Loaders over a prepared folder's windows (stride = context), shuffled as `_loaders`
    shuffles a text's, and a fingerprint of its data (a resume on other data is refused)."""
    from ..data import DataLoader
    from ..data.shards import ShardLoader, ShardWindows
    train, val = ShardWindows(data_dir, "train", ctx), ShardWindows(data_dir, "val", ctx)
    if len(train) < step_batch or len(val) == 0:
        raise InputError(f"{data_dir} holds {len(train)} training and {len(val)} validation "
                         f"windows of {ctx} + 1 tokens; a step needs {step_batch} and validation "
                         "one: prepare more text or use a smaller context/batch")
    fingerprint = hashlib.sha256("".join(e["sha256"] for e in train.index["train"]).encode())
    return (ShardLoader(train, batch_size=step_batch, shuffle=True, drop_last=True, seed=seed),
            DataLoader(val, batch_size=step_batch, shuffle=False, drop_last=False),
            f"{train.num_tokens} tokens, sha256 {fingerprint.hexdigest()[:16]}")
