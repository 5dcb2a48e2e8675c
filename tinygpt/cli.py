"""The `tinygpt` command line (also `python -m tinygpt`).

Subcommands: pretrain, generate, download, finetune-classify, finetune-instruct. User mistakes
(a missing file, an unknown config name, a bad checkpoint) print one line and exit with
status 2; anything else is a bug and keeps its traceback."""
import argparse
import sys
import time
from .errors import InputError

COMMANDS = {}


def command(name, help):
    def register(fn):
        COMMANDS[name] = (fn, help)
        return fn
    return register


@command("pretrain", "train a GPT on a text file (book chapter 5)")
def _pretrain(sub):
    sub.add_argument("--text", required=True, help="UTF-8 text file to train on")
    sub.add_argument("--config", default="book-124M",
                     help="preset (book-124M, small, tiny), a gpt2 size name, or a .json config file")
    sub.add_argument("--epochs", type=int, default=10)
    sub.add_argument("--batch-size", type=int, default=2)
    sub.add_argument("--lr", type=float, default=4e-4)
    sub.add_argument("--weight-decay", type=float, default=0.1)
    sub.add_argument("--eval-freq", type=int, default=5, help="evaluate every N steps")
    sub.add_argument("--eval-iter", type=int, default=5, help="batches per evaluation")
    sub.add_argument("--seed", type=int, default=123)
    sub.add_argument("--schedule", action="store_true",
                     help="appendix D: warm-up, cosine decay and gradient clipping")
    sub.add_argument("--start-context", default="Every effort moves you")
    sub.add_argument("--out", default="runs/pretrain", help="directory for checkpoint and plot")
    sub.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint of an earlier run")
    sub.add_argument("--checkpoint-every", type=int, help="also save a checkpoint every N steps")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")

    def run(args):
        import pathlib

        from .train.pretrain import pretrain, resolve_config
        text = _read_text(args.text)
        cfg = resolve_config(args.config)
        _, result = pretrain(text, cfg, num_epochs=args.epochs, batch_size=args.batch_size,
                             lr=args.lr, weight_decay=args.weight_decay, eval_freq=args.eval_freq,
                             eval_iter=args.eval_iter, seed=args.seed,
                             start_context=args.start_context, out_dir=pathlib.Path(args.out),
                             resume=args.resume, schedule=args.schedule, quiet=args.quiet,
                             checkpoint_every=args.checkpoint_every)
        print(f"checkpoint: {result['checkpoint']}")
    return run


@command("generate", "continue a prompt with a trained checkpoint")
def _generate(sub):
    sub.add_argument("--checkpoint", required=True, help="a checkpoint written by pretrain")
    sub.add_argument("--prompt", required=True)
    sub.add_argument("--max-new-tokens", type=int, default=50)
    sub.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    sub.add_argument("--top-k", type=int)
    sub.add_argument("--seed", type=int, default=123)

    def run(args):
        from . import manual_seed
        from .model import GPTModel
        from .model.generate import generate, text_to_token_ids, token_ids_to_text
        from .tokenizer import get_gpt2_tokenizer
        from .train.checkpoint import read_checkpoint
        model_sd, _, state = read_checkpoint(args.checkpoint)
        if not state.get("config"):
            raise InputError(f"{args.checkpoint} records no model config")
        model = GPTModel(state["config"])
        model.load_state_dict(model_sd)
        model.eval()
        tokenizer = get_gpt2_tokenizer()
        manual_seed(args.seed)
        ids = generate(model, text_to_token_ids(args.prompt, tokenizer), args.max_new_tokens,
                       state["config"]["context_length"], temperature=args.temperature,
                       top_k=args.top_k, eos_id=50256)
        print(token_ids_to_text(ids, tokenizer))
    return run


@command("download", "download GPT-2 weights into the cache (one time, needs internet)")
def _download(sub):
    sub.add_argument("name", help='"gpt2-small (124M)", "gpt2-medium (355M)", "gpt2-large (774M)", '
                                  '"gpt2-xl (1558M)" or 124M/355M/774M/1558M')
    sub.add_argument("--cache-dir", help="default: $TINYGPT_HOME or ~/.cache/tinygpt")

    def run(args):
        from .weights.download import download_gpt2
        print(download_gpt2(args.name, cache_dir=args.cache_dir))
    return run


def _read_text(path):
    import pathlib
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"text file {path} does not exist")
    return p.read_text(encoding="utf-8")


def build_parser():
    parser = argparse.ArgumentParser(prog="tinygpt", description="Build a Large Language Model "
                                     "(From Scratch) on a NumPy + Numba autograd engine.")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runners = {}
    for name, (setup, help) in COMMANDS.items():
        sub = subs.add_parser(name, help=help, description=help)
        runners[name] = setup(sub)
    return parser, runners


def main(argv=None) -> int:
    _register_finetune_commands()
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        runners[args.command](args)
    except (ValueError, OSError, ImportError) as err:  # OSError: missing files, downloads, network
        print(f"tinygpt {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinygpt {args.command}: interrupted", file=sys.stderr)
        return 130
    print(f"({args.command} took {time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0


def _register_finetune_commands():
    """The fine-tuning subcommands live beside their code (tinygpt.finetune)."""
    try:
        from .finetune import cli as finetune_cli
    except ModuleNotFoundError as err:
        if err.name != "tinygpt.finetune.cli":
            raise
        return
    finetune_cli.register(command)


if __name__ == "__main__":
    sys.exit(main())
