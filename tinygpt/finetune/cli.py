"""Registers the fine-tuning subcommands (book chapters 6 and 7) with the `tinygpt` command."""
from . import classify_cmd, instruct_cmd


def register(command) -> None:
    """Add finetune-classify, classify and finetune-instruct through tinygpt.cli's
    `command(name, help)` decorator."""
    classify_cmd.add_cli(command)
    instruct_cmd.add_cli(command)
