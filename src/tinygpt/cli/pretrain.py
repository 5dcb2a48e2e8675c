"""`tinygpt pretrain`: the book's chapter-5 run on any text file (tinygpt.train.pretrain)."""
import pathlib

from ..errors import InputError
from . import command
from ..argtypes import non_negative_float, positive_float, positive_int


@command("pretrain", "train a GPT on a text file (book chapter 5)")
def _pretrain(sub):
    sub.add_argument("--text", required=True, help="UTF-8 text file to train on")
    sub.add_argument("--config", help="preset (book-124M, small, tiny), a gpt2 size name, or a "
                     ".json config file; default book-124M, or the --resume checkpoint's own")
    sub.add_argument("--epochs", type=positive_int, default=10,
                     help="total epochs (a resumed run continues up to this count)")
    sub.add_argument("--batch-size", type=positive_int, default=2)
    sub.add_argument("--lr", type=positive_float, default=4e-4)
    sub.add_argument("--weight-decay", type=non_negative_float, default=0.1)
    sub.add_argument("--eval-freq", type=positive_int, default=5, help="evaluate every N steps")
    sub.add_argument("--eval-iter", type=positive_int, default=5, help="batches per evaluation")
    sub.add_argument("--seed", type=int, default=123)
    sub.add_argument("--schedule", action="store_true",
                     help="appendix D: warm-up, cosine decay and gradient clipping")
    sub.add_argument("--start-context", default="Every effort moves you")
    sub.add_argument("--out", default="runs/pretrain", help="directory for checkpoint and plot")
    sub.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint of an earlier run")
    sub.add_argument("--checkpoint-every", type=positive_int, help="also save a checkpoint every N steps")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")

    def run(args):
        from ..train.pretrain import pretrain, resolve_config
        text = read_text(args.text)
        if args.config is not None:
            cfg = resolve_config(args.config)
        else:  # a resumed run keeps the checkpoint's config; a new one is the book's
            cfg = None if args.resume else resolve_config("book-124M")
        _, result = pretrain(text, cfg, num_epochs=args.epochs, batch_size=args.batch_size,
                             lr=args.lr, weight_decay=args.weight_decay, eval_freq=args.eval_freq,
                             eval_iter=args.eval_iter, seed=args.seed,
                             start_context=args.start_context, out_dir=pathlib.Path(args.out),
                             resume=args.resume, schedule=args.schedule, quiet=args.quiet,
                             checkpoint_every=args.checkpoint_every)
        print_summary(result)
    return run


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
