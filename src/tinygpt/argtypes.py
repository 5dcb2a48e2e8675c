"""Types for command-line arguments that must be positive or finite: each checks its value while
the command line is parsed, before any work starts, so `--epochs 0` or `--temperature nan` is
refused at once (argparse puts the option's name in front of the message). Standard library only,
below every layer: the `tinygpt` command and the fine-tuning commands share them."""
import argparse
import math


def _number(kind, text, name):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None


def positive_int(text: str) -> int:
    """A count that must be at least 1 (epochs, batch size, evaluation period, ...)."""
    value = _number(int, text, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite float above 0 (a learning rate)."""
    value = _number(float, text, "a number")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite float of at least 0 (temperature, weight decay)."""
    value = _number(float, text, "a number")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text}")
    return value
