"""Reused storage for the few very large arrays a training step makes afresh every time.

Why: a GPT step creates four vocabulary-sized arrays (the logits, their gradient, the gradients of
``out_head`` and ``tok_emb``: 100-150 MB each for GPT-2 124M). glibc gives every array above 32 MB
fresh pages from the OS, and faulting those in (the kernel zeroes them first) is a large share of a
step; reusing the previous step's array costs nothing. ``bench/train_step.py`` and
``bench/page_faults.py`` measure it (numbers in ``bench/README.md``).

This module is the one place the mechanism lives. The ops ask for storage through ``empty`` or
``zeros`` with one of the ``Slot`` objects declared at the bottom (so this file lists every array
that is ever reused, and go-to-definition leads from each op to here).

The reuse rule: an array is handed out again only when nothing else references it: not a tensor,
a ``.grad``, a view, a user's variable. CPython's reference count tells: an array held only by its
pool list has exactly ``_IDLE_REFS`` references in ``empty``'s loop (``_refs(a) == _IDLE_REFS``).
Anything still alive makes ``empty`` allocate a new array, so reuse never changes a result. Arrays below ``MIN_BYTES`` come
from glibc's heap and are never pooled.

Fail safe: the rule needs CPython's exact, GIL-protected reference counts. On another Python
implementation or a free-threaded build (``Py_GIL_DISABLED``), or if the probe at import does not
see the counts the rule expects, ``REUSE`` is False and ``empty`` is plain ``np.empty``: off, never
wrong.
"""
import math
import sys
import sysconfig

import numpy as np

from ..errors import InputTypeError

MIN_BYTES = 32 << 20       # glibc's largest mmap threshold: smaller arrays are recycled by malloc
MAX_POOL_BYTES = 2 << 30   # storage the pool may hold; beyond it arrays are not kept
                           # (per slot, idle arrays of at most two shapes are kept: see _drop_idle)


class Slot:
    """One kind of reused array. The pool keeps arrays per (slot, shape, dtype)."""
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return f"Slot({self.name!r})"


_pool = {}                 # (slot, shape, dtype str) -> [arrays], least recently used key first
_pooled_bytes = 0


def _refs(a) -> int:
    return sys.getrefcount(a)


def _idle_refs() -> int:
    # the count `_refs` sees for an array only a list and a loop over it hold, measured the way
    # `empty` and `_drop_idle` look (the exact number differs between CPython versions); -1 where
    # there is no reference count to read (PyPy has no sys.getrefcount): REUSE is then off
    if not hasattr(sys, "getrefcount"):
        return -1
    for a in [np.empty(0)]:
        return _refs(a)


_IDLE_REFS = _idle_refs()


def refcount_rule_holds(implementation=None, gil_disabled=None) -> bool:
    """Whether ``sys.getrefcount(a) == _IDLE_REFS`` really means 'nothing else holds a': CPython with
    the GIL, and a probe that sees the count change when a second reference exists."""
    implementation = sys.implementation.name if implementation is None else implementation
    if gil_disabled is None:
        gil_disabled = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    if implementation != "cpython" or gil_disabled or not hasattr(sys, "getrefcount"):
        return False
    held = [np.empty(0)]
    for a in held:
        alone = _refs(a) == _IDLE_REFS
    other = held[0]
    for a in held:
        shared = _refs(a) == _IDLE_REFS
    del other
    return alone and not shared


REUSE = refcount_rule_holds()


def empty(slot: Slot, shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array, reusing an idle one made earlier for the same `slot`,
    `shape` and `dtype` when there is one."""
    global _pooled_bytes
    if not isinstance(slot, Slot):
        raise InputTypeError(f"buffers.empty needs a buffers.Slot, got {slot!r}")
    shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
    nbytes = dtype.itemsize * math.prod(shape)
    if not REUSE or nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    key = (slot, shape, dtype.str)
    arrays = _pool.pop(key, None)
    if arrays is None:
        _drop_idle(slot)
        arrays = []
    _pool[key] = arrays  # (re)inserted last: the pool's order is least recently used first
    for a in arrays:
        if _refs(a) == _IDLE_REFS:  # idle: only the list and this loop hold it
            return a
    a = np.empty(shape, dtype)
    if _pooled_bytes + nbytes <= MAX_POOL_BYTES:
        arrays.append(a)
        _pooled_bytes += nbytes
    return a


def _drop_idle(slot: Slot) -> None:
    # A new shape for `slot`: forget the idle arrays of its other shapes but the most recently
    # used one. Otherwise a sequence that grows by a token per step (the book's generate_text_simple
    # recomputes (T, vocab) logits for T = 8, 9, 10, ...) would park one array per length, up to
    # MAX_POOL_BYTES; keeping one other shape lets a training batch and a smaller last evaluation
    # batch alternate without fresh pages each time.
    global _pooled_bytes
    for key in [k for k in _pool if k[0] is slot][:-1]:
        in_use = []
        for a in _pool[key]:
            if _refs(a) == _IDLE_REFS:  # the same test as in `empty`
                _pooled_bytes -= a.nbytes
            else:
                in_use.append(a)
        if in_use:
            _pool[key] = in_use
        else:
            del _pool[key]


def zeros(slot: Slot, shape, dtype) -> np.ndarray:
    """``empty`` filled with zeros (a refill of pages already mapped, far cheaper than fresh ones)."""
    a = empty(slot, shape, dtype)
    a.fill(0)
    return a


def clear() -> None:
    """Drop every pooled array (memory returns to the OS once no tensor uses it)."""
    global _pooled_bytes
    _pool.clear()
    _pooled_bytes = 0


def pooled_bytes() -> int:
    return _pooled_bytes


# --- the slots: every array the engine reuses ------------------------------------------------
LINEAR_OUT = Slot("linear.out")                  # ops/linear.py: y = x @ W.T (the head's logits)
LINEAR_GRAD_WEIGHT = Slot("linear.grad_weight")  # ops/linear.py: dW = g.T @ x (the head's dW)
CROSS_ENTROPY_GRAD = Slot("cross_entropy.grad")  # ops/loss.py: d loss / d logits
EMBEDDING_GRAD = Slot("embedding.grad")          # ops/indexing.py: dW of the token embedding
