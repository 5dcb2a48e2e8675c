"""Argument checks shared by the fine-tuning subcommands (classify_cmd.py, instruct_cmd.py).

A module of its own so that cli.py imports the command modules and they import this, with no
import going back up to cli.py."""
from ..errors import InputError


def require_at_least_one(args, names) -> None:
    """A clear error for a count option (epochs, batch size, ...) given as 0 or negative."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
