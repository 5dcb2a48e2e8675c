"""``TINYGPT_KERNELS``, checked before anything loads the kernels.

``tinygpt.kernels`` reads the variable once, at import (``numba``, the default, or ``numpy``, the
plain references) and refuses any other value. That refusal would come while ``import tinygpt``
runs, before the ``tinygpt`` command could print it as one line, so the package checks the value
here first: with a bad value ``import tinygpt`` loads nothing, each of its names raises the
InputError below, and the command prints it and exits with status 2. Standard library only: this
module is read before the engine.
"""
import os

CHOICES = ("numba", "numpy")   # the kernel sets tinygpt.kernels can export (it spells them too)


def kernel_choice_problem():
    """None if TINYGPT_KERNELS is unset, empty or names a kernel set; otherwise the message."""
    value = os.environ.get("TINYGPT_KERNELS", "")
    if (value.strip().lower() or "numba") in CHOICES:
        return None
    return (f"TINYGPT_KERNELS={value!r} is not a kernel set: use numba (the default) or numpy "
            "(the plain NumPy references), or unset it")
