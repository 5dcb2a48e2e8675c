"""Reused storage for the few very large arrays a training step makes afresh every time.

Why: a GPT step creates four arrays of 100-150 MB (the logits, their gradient, the vocabulary-sized
gradients of ``out_head`` and ``tok_emb``). glibc gives every array above 32 MB fresh pages from the
OS, NumPy asks for huge pages for them, and faulting those in (the kernel zeroes and often compacts
memory first) cost 0.6-0.9 s of a 3.3 s book-124M step on the 2-core machine (bench/train_step.py;
7,800 page faults per step). Reusing the previous step's array costs nothing.

Safety rule: an array is handed out again only when nothing else references it (CPython's reference
count: not a tensor, a ``.grad``, a view, a user's variable). Anything still alive makes ``empty``
allocate a new array, so reuse never changes a result. Arrays below ``MIN_BYTES`` come from glibc's
heap (see ``tune_malloc``) and are never pooled.

``tune_malloc`` (run once when tinygpt is imported, on glibc): glibc starts with a 128 KB mmap
threshold and a 256 KB trim threshold, and raises them only as far as the largest mmapped array
freed so far. A small model never frees a large one, so its 0.1-2 MB activations kept going back to
the OS and faulting in again: the tiny bench config took ~3,300 page faults and 8-10 ms of kernel
time per 25-30 ms training step, `small` ~17,000 faults and ~50 ms per 750 ms step (AMD EPYC VM,
2026-12-03). The setting glibc reaches by itself once a 32 MB array has been freed (every book-124M
step does: 1 fault per step there) is set from the start instead: arrays below 32 MB from the
heap, up to 64 MB of free heap top kept. Result: 0-1 faults per step in all three configs.
"""
import ctypes
import math
import os
import sys

import numpy as np

MIN_BYTES = 32 << 20       # glibc's largest mmap threshold: smaller arrays are recycled by malloc
MAX_POOL_BYTES = 2 << 30   # idle-or-busy storage the pool may hold; beyond it arrays are not kept
                          # (per tag, idle arrays of at most two shapes are kept: see _drop_idle)

_pool = {}                 # (tag, shape, dtype) -> [arrays]
_pooled_bytes = 0


def _idle_refs():
    # the count `empty` sees for an array only its pool list holds, measured with the same loop
    # (the exact number differs between CPython versions)
    for a in [np.empty(0)]:
        return sys.getrefcount(a)


_IDLE_REFS = _idle_refs()


def empty(tag: str, shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array, reusing an idle one made earlier under the same `tag`,
    `shape` and `dtype` when there is one."""
    global _pooled_bytes
    shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
    nbytes = dtype.itemsize * math.prod(shape)
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    key = (tag, shape, dtype.str)
    arrays = _pool.pop(key, None)
    if arrays is None:
        _drop_idle(tag)
        arrays = []
    _pool[key] = arrays  # (re)inserted last: the pool's order is least recently used first
    for a in arrays:
        if sys.getrefcount(a) == _IDLE_REFS:  # only the list and this loop hold it
            return a
    a = np.empty(shape, dtype)
    if _pooled_bytes + nbytes <= MAX_POOL_BYTES:
        arrays.append(a)
        _pooled_bytes += nbytes
    return a


def _drop_idle(tag: str) -> None:
    # A new shape under `tag`: forget the idle arrays of its other shapes but the most recently
    # used one. Otherwise a sequence that grows by a token per step (the book's generate_text_simple
    # recomputes (T, vocab) logits for T = 8, 9, 10, ...) would park one array per length, up to
    # MAX_POOL_BYTES; keeping one other shape lets a training batch and a smaller last evaluation
    # batch alternate without fresh pages each time.
    global _pooled_bytes
    for key in [k for k in _pool if k[0] == tag][:-1]:
        busy = []
        for a in _pool[key]:
            if sys.getrefcount(a) == _IDLE_REFS:  # the same test as in `empty`
                _pooled_bytes -= a.nbytes
            else:
                busy.append(a)
        if busy:
            _pool[key] = busy
        else:
            del _pool[key]


def zeros(tag: str, shape, dtype) -> np.ndarray:
    """``empty`` filled with zeros (a refill of warm pages: ~8 ms for 150 MB)."""
    a = empty(tag, shape, dtype)
    a.fill(0)
    return a


def clear() -> None:
    """Drop every pooled array (memory returns to the OS once no tensor uses it)."""
    global _pooled_bytes
    _pool.clear()
    _pooled_bytes = 0


def pooled_bytes() -> int:
    return _pooled_bytes


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # mallopt parameter numbers from glibc's malloc.h
MMAP_THRESHOLD = 32 << 20                     # glibc's own upper limit for its dynamic threshold
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD           # what glibc pairs with it


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds to the values above; True if they were set.

    Skipped (False) off glibc, when ``TINYGPT_MALLOC=default``, or when the user set glibc's own
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` variables (theirs win). The setting is
    process-wide: NumPy, and PyTorch in the same process, allocate through the same malloc.
    """
    if os.environ.get("TINYGPT_MALLOC", "").strip().lower() == "default":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
    except (AttributeError, ValueError, OSError):  # not glibc (macOS, Windows, musl)
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - glibc always has it
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mmap threshold first: setting either one turns off glibc's dynamic adjustment of both
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


MALLOC_TUNED = tune_malloc()
