"""The op tests' Hypothesis strategies: the public ones in tinygpt/testing/strategies.py (one
implementation, which users property-test their own ops with)."""
from tinygpt.testing.strategies import *  # noqa: F401,F403
from tinygpt.testing.strategies import __all__  # noqa: F401
