"""Shared pytest configuration: the Hypothesis profiles.

`dev` (default on a workstation) keeps Hypothesis random so repeated runs explore new cases;
`ci` (default when the env var CI is set) is derandomized so a CI failure reproduces exactly,
and prints the reproduction blob. Both drop the per-example deadline: the first call of a
Numba kernel compiles, which would otherwise look like a slow example.
Choose explicitly with HYPOTHESIS_PROFILE=dev|ci.
"""
import os
import sys

from hypothesis import settings

# the test modules import `helpers` and `strategies` from this folder, whatever --import-mode
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
