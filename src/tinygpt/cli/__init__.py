"""The `tinygpt` command line (also `python -m tinygpt`).

Subcommands: pretrain, prepare-data, generate, chat, show, export, download, serve, quantize,
eval-math, finetune-grpo, finetune-classify, classify, finetune-instruct, finetune-dpo.
A mistake of the user's (a missing file, an unknown config, a bad argument or checkpoint: every
`tinygpt.errors.TinyGPTError`, and the system's OSError and MemoryError) is printed as one line and exits with status 2; anything else is a bug and keeps its traceback.

The command opts in to what a library must not do on import: glibc's malloc thresholds are set
for the process (`tinygpt.tune_malloc`), and NumPy's RuntimeWarnings from tinygpt's code are
silenced (non-finite values are reported by tinygpt's own errors instead)."""
import sys
import time
import warnings

from .. import __version__
from ..errors import TinyGPTError
from .args import OneLineParser

COMMANDS = {}


def command(name, help):
    """Register `setup(subparser) -> run(args)` as the subcommand `name`."""
    def register(setup):
        COMMANDS[name] = (setup, help)
        return setup
    return register


def build_parser():
    parser = OneLineParser(prog="tinygpt", description="Build a Large Language Model "
                           "(From Scratch) on a NumPy + Numba autograd engine.")
    parser.add_argument("--version", action="version", version=f"tinygpt {__version__}")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                 parser_class=OneLineParser)
    runners = {}
    for name, (setup, help) in COMMANDS.items():
        sub = subs.add_parser(name, help=help, description=help)
        runners[name] = setup(sub)
    return parser, runners


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv=None) -> int:
    from .. import KERNEL_CHOICE_PROBLEM
    if KERNEL_CHOICE_PROBLEM is not None:   # before anything loads the kernels
        print(f"tinygpt: error: {KERNEL_CHOICE_PROBLEM}", file=sys.stderr)
        return 2
    _register_commands()
    parser, runners = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage mistake (already printed)
        return done.code
    _tune_process()
    start = time.perf_counter()
    try:
        runners[args.command](args)
    except (TinyGPTError, ValueError, OSError, MemoryError) as err:
        # ValueError: a library error not yet in the tinygpt family is still the user's input
        print(f"tinygpt {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM while training (tinygpt.train.Interrupted)
        note = getattr(err, "note", None)  # e.g. pretrain: the checkpoint saved, and how to resume
        print(f"tinygpt {args.command}: interrupted" + (f"; {note}" if note else ""), file=sys.stderr)
        return 128 + getattr(err, "signum", 2)
    print(f"({args.command} took {time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0


def _tune_process() -> None:
    # training stops at the first non-finite loss and generation refuses non-finite logits, each
    # with a message saying what to do, so NumPy's overflow warnings on the way only add noise
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"tinygpt\.")
    from .. import tune_malloc
    tune_malloc()


def _register_commands() -> None:
    # importing each registers its commands (once per process: a module is imported once)
    from . import inference, pretrain, show  # noqa: F401
    from . import data  # noqa: F401  (prepare-data, beside pretrain)
    from . import serve  # noqa: F401  (the serve command; tinygpt.serve loads when it runs)
    from . import quantize  # noqa: F401  (tinygpt quantize: q8 or bf16 weights saved once)
    from . import reasoning  # noqa: F401  (eval-math, finetune-grpo)
    from . import finetune  # noqa: F401  (last: the fine-tuning commands follow in --help)
