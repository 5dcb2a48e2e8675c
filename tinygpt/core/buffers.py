"""Reused storage for the few very large arrays a training step makes afresh every time.

Why: a GPT step creates four arrays of 100-150 MB (the logits, their gradient, the vocabulary-sized
gradients of ``out_head`` and ``tok_emb``). glibc gives every array above 32 MB fresh pages from the
OS, NumPy asks for huge pages for them, and faulting those in (the kernel zeroes and often compacts
memory first) cost 0.6-0.9 s of a 3.3 s book-124M step on the 2-core machine (bench/train_step.py;
7,800 page faults per step). Reusing the previous step's array costs nothing.

Safety rule: an array is handed out again only when nothing else references it (CPython's reference
count: not a tensor, a ``.grad``, a view, a user's variable). Anything still alive makes ``empty``
allocate a new array, so reuse never changes a result. Arrays below ``MIN_BYTES`` come from glibc's
heap already and are never pooled.
"""
import math
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
