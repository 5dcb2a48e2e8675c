"""Registers the fine-tuning subcommands (book chapter 6, chapter 7 and its DPO bonus) with the
`tinygpt` command."""
from . import classify_cmd, dpo_cmd, instruct_cmd


def register(command) -> None:
    """Add finetune-classify, classify, finetune-instruct and finetune-dpo through tinygpt.cli's
    `command(name, help)` decorator."""
    classify_cmd.add_cli(command)
    instruct_cmd.add_cli(command)
    dpo_cmd.add_cli(command)
