"""``tune_malloc``: an explicit, process-wide glibc setting that saves small models their page faults.

Importing tinygpt never calls it (``import tinygpt`` changes nothing outside tinygpt); the CLI, the
examples and the benches do, first thing. The rule: glibc starts with a 128 KB mmap threshold and a
256 KB trim threshold and raises them only as far as the largest mmapped block freed so far. A small
model never frees a large array, so its 0.1-2 MB activations go back to the OS after every use and
fault in again on the next step. ``tune_malloc`` sets from the start the values glibc reaches by
itself once a 32 MB block has been freed (which every GPT-2 124M step does): arrays below 32 MB come
from the heap, up to 64 MB of free heap top is kept. ``bench/page_faults.py`` prints the page faults
per training step with and without it; ``bench/README.md`` has the measured effect.

The setting is process-wide: NumPy, and PyTorch in the same process, allocate through the same
malloc. That is why it is a call the program makes, not a side effect of the import.
"""
import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # mallopt parameter numbers from glibc's malloc.h
MMAP_THRESHOLD = 32 << 20                     # glibc's own upper limit for its dynamic threshold
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD           # what glibc pairs with it


def is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not glibc (macOS, Windows, musl)
        return False


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds to the values above; True if they were set.

    Skipped (False) off glibc, when ``TINYGPT_MALLOC=default``, or when the user set glibc's own
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` variables (theirs win).
    """
    if os.environ.get("TINYGPT_MALLOC", "").strip().lower() == "default":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    if not is_glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - glibc always has it
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mmap threshold first: setting either one turns off glibc's dynamic adjustment of both
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
