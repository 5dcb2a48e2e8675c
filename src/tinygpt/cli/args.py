"""The `tinygpt` command's parser: usage mistakes on one line. The argument types that check
counts and rates while parsing live in tinygpt/argtypes.py (the fine-tuning commands use them too)."""
import argparse


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (exit 2), as every tinygpt error is."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
