"""`tinygpt pretrain`: the book's chapter-5 run on any text file (tinygpt.train.pretrain)."""
import argparse
import contextlib
import hashlib
import os
import pathlib
import shlex
import sys

from . import command
from ..argtypes import non_negative_float, positive_float, positive_int


@command("pretrain", "train a GPT on a text file or prepared shards (book chapter 5)")
def _pretrain(sub):
    source = sub.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="UTF-8 text file to train on")
    source.add_argument("--data", metavar="DIR", help="token shards from `tinygpt prepare-data`, "
                        "read window by window; under mpiexec -n N, N ranks share each batch")
    sub.add_argument("--config", help="preset (book-124M, small, tiny), a gpt2 size name, or a "
                     ".json config file; default book-124M, or the --resume checkpoint's own")
    # Settings left out take the book's value in a new run and the checkpoint's with --resume;
    # a resumed run refuses a different value (tinygpt/train/resume.py).
    sub.add_argument("--epochs", type=positive_int,
                     help="total epochs (default 10; a resumed run continues up to this count)")
    sub.add_argument("--batch-size", type=positive_int, help="default 2 (the global batch: "
                     "under mpiexec -n N each rank runs 1/N of it)")
    sub.add_argument("--grad-accum", type=positive_int, metavar="K", help="K batches per "
                     "optimizer step, the same step as one K-times-larger batch (default 1)")
    sub.add_argument("--lr", type=positive_float, help="default 4e-4")
    sub.add_argument("--weight-decay", type=non_negative_float, help="default 0.1")
    sub.add_argument("--eval-freq", type=positive_int, help="evaluate every N steps (default 5)")
    sub.add_argument("--eval-iter", type=positive_int, help="batches per evaluation (default 5)")
    sub.add_argument("--seed", type=int, help="default 123")
    sub.add_argument("--schedule", action=argparse.BooleanOptionalAction,
                     help="appendix D: warm-up, cosine decay and gradient clipping (default off)")
    sub.add_argument("--start-context", default="Every effort moves you")
    sub.add_argument("--out", default="runs/pretrain", help="directory for checkpoint and plot")
    sub.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint of an earlier "
                     "run, with its config and settings")
    sub.add_argument("--checkpoint-every", type=positive_int, help="also save a checkpoint every N steps")
    sub.add_argument("--max-steps", type=positive_int, help="stop (and save) after N steps in all")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_argument("--rank-timeout", type=positive_float, metavar="SECONDS", default=RANK_TIMEOUT,
                     help="under mpiexec: how long a rank waits for the others in one exchange "
                     "before it takes one for dead and ends the job (default %(default)g; more "
                     "than the slowest checkpoint save)")

    def run(args):
        from ..train import Interrupted
        from ..train.pretrain import pretrain, resolve_config
        text = read_text(args.text) if args.text is not None else None
        data_parallel = launched_ranks(args.rank_timeout)
        if args.config is not None:
            cfg = resolve_config(args.config)
        else:  # a resumed run keeps the checkpoint's config; a new one is the book's
            cfg = None if args.resume else resolve_config("book-124M")
        if data_parallel is not None:   # every rank must run the same command on the same data
            data_parallel.check_same("command line or data", [vars(args), data_fingerprint(args, text)])
            if data_parallel.rank != 0:   # rank 0 alone prints; errors still reach stderr
                sys.stdout = open(os.devnull, "w")
        try:
            with data_parallel.guard() if data_parallel else contextlib.nullcontext():
                _, result = pretrain(text, cfg, num_epochs=args.epochs, batch_size=args.batch_size,
                                     lr=args.lr, weight_decay=args.weight_decay,
                                     eval_freq=args.eval_freq, eval_iter=args.eval_iter,
                                     seed=args.seed, start_context=args.start_context,
                                     out_dir=pathlib.Path(args.out), resume=args.resume,
                                     schedule=args.schedule, quiet=args.quiet,
                                     checkpoint_every=args.checkpoint_every, data_dir=args.data,
                                     grad_accum=args.grad_accum, max_steps=args.max_steps,
                                     data_parallel=data_parallel)
        except Interrupted as err:  # cli/__init__.py prints "interrupted" and this note
            if getattr(err, "checkpoint", None) is not None:
                launch = f"mpiexec -n {data_parallel.size} " if data_parallel else ""
                err.note = (f"checkpoint after {err.steps_done} steps saved to {err.checkpoint}; "
                            "resume with: " + launch + resume_command(args, err.checkpoint))
            raise
        if data_parallel is None or data_parallel.rank == 0:
            print_summary(result)
    return run


def launched_ranks(timeout=None):
    """None in a plain run; under mpiexec (or another MPI launcher) with several ranks, the
    communicator of tinygpt.distributed (which needs the [mpi] extra), whose collectives end the
    job after `timeout` seconds of waiting (default RANK_TIMEOUT)."""
    if max(int(os.environ.get(k, "1") or 1) for k in MPI_SIZE_VARIABLES) < 2:
        return None
    from ..distributed import DataParallel
    return DataParallel.from_launch(timeout or RANK_TIMEOUT, command="pretrain")


def data_fingerprint(args, text) -> str:
    """A digest of what this rank trains on: the text, or the shard folder's index."""
    if text is not None:
        return hashlib.sha256(text.encode()).hexdigest()
    from .. import files
    index = pathlib.Path(args.data) / "index.json"
    return hashlib.sha256(files.read_bytes(index, "shard index") if index.is_file() else b"").hexdigest()


# how MPICH's Hydra (and Slurm's PMI) and Open MPI tell a process the number of ranks
MPI_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
RANK_TIMEOUT = 600.0   # = distributed.RANK_TIMEOUT, not imported: a plain run never loads distributed/


def resume_command(args, checkpoint) -> str:
    """The command that continues this run from `checkpoint` (its settings come with it), in
    the form this one was started: the installed `tinygpt` script or `python -m tinygpt`."""
    program = ["tinygpt"] if os.path.basename(sys.argv[0]) == "tinygpt" else ["python", "-m", "tinygpt"]
    data = getattr(args, "data", None)   # (a Namespace built by hand may lack the newer flags)
    source = ["--data", data] if data is not None else ["--text", args.text]
    words = [*program, "pretrain", *source, "--resume", str(checkpoint), "--out", args.out]
    if args.epochs is not None:
        words += ["--epochs", str(args.epochs)]
    if args.start_context != "Every effort moves you":
        words += ["--start-context", args.start_context]
    for flag, value in (("--checkpoint-every", args.checkpoint_every),
                        ("--max-steps", getattr(args, "max_steps", None))):
        if value is not None:
            words += [flag, str(value)]
    return shlex.join(words + (["--quiet"] if args.quiet else []))


def print_summary(result) -> None:
    """The end of a run: final losses, throughput, and where the outputs are."""
    if result.get("nothing_to_do"):
        return
    if result.get("train_losses"):
        print(f"final: train loss {result['train_losses'][-1]:.3f}, "
              f"val loss {result['val_losses'][-1]:.3f}")
    if result.get("seconds"):
        print(f"training loop {result['seconds']:.1f} s, "
              f"{result['tokens_per_second']:.0f} tokens/s incl. evaluation and samples")
    print(f"checkpoint: {result['checkpoint']}")
    if result.get("plot"):
        print(f"loss plot: {result['plot']}")


def read_text(path) -> str:
    """A UTF-8 text file's contents, or an InputError naming the file and what is wrong (a folder,
    a missing file, one over tinygpt.files.MAX_TEXT_BYTES or endless like /dev/zero, not UTF-8)."""
    from .. import files
    return files.read_text(path, "--text file")
