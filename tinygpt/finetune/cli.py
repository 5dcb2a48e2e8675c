"""Registers the fine-tuning subcommands (book chapters 6 and 7) with the `tinygpt` command."""
from ..errors import InputError


def register(command) -> None:
    from . import classify_cmd, instruct_cmd  # they import require_at_least_one from here
    classify_cmd.add_cli(command)
    instruct_cmd.add_cli(command)


def require_at_least_one(args, names) -> None:
    """A clear error for a count option (epochs, batch size, ...) given as 0 or negative."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
