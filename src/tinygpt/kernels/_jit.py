"""Numba plumbing shared by the kernel modules: njit, the compile policy, and row-chunk threading.

Compile policy. ``njit`` is ``numba.njit(cache=True, nogil=True)``. Kernels compile lazily, on their
first call, for the argument types actually seen (float32 or float64, C-contiguous: every wrapper
calls ``np.ascontiguousarray`` first); ``cache=True`` keeps the machine code in ``__pycache__`` (or
``NUMBA_CACHE_DIR``), so importing tinygpt compiles nothing and a later interpreter only loads
what it uses. Without Numba, or under ``NUMBA_DISABLE_JIT=1``, kernels run as plain Python.
Numba's cache does not track callees: after editing a helper (``_rows.py``, ``chunk_bounds``) delete
``tinygpt/kernels/__pycache__/*.nb[ic]``, or its callers keep the old machine code.
The cache is a convenience, never a requirement: where no folder is writable (a read-only install
and a read-only or missing home, without ``NUMBA_CACHE_DIR``) kernels compile without it, and a
cache entry that cannot be read (a damaged or foreign ``.nbi``/``.nbc`` file) is compiled afresh
and overwritten. Each case is said once, as one line on stderr, and only when it happens.

Threading. Kernels are serial Numba functions over a contiguous block of independent output rows
(``kernel(..., c, nchunks)`` handles rows [c*R//n, (c+1)*R//n)); ``run_chunks`` hands the chunks out
one at a time to the calling thread and a small persistent thread pool (the kernels release the
GIL). Up to 4 chunks per thread, claimed dynamically: with static halves, a 2-thread call waited
for the half whose thread did not get a core, and ran slower than 1 thread while another process
was busy (bench/kernels.py at 1 and 2 threads shows it).
Why not ``parallel=True``/``prange``: the same kernels written with prange took twice the CPU time
to compile cold (bench/kernels.py's compile line), and prange brings the threading layer's trouble
(OpenMP threads spin-wait, and collapse when time-sliced). A waiting pool thread sleeps on
a lock instead. A hand-off to a pool thread costs tens of microseconds, so kernels only split when
each chunk gets enough work to pay for it (their ``MIN_ELEMS``). Thread count:
``NUMBA_NUM_THREADS`` (default: the CPU count), changeable with ``set_num_threads``.
"""
import contextlib
import itertools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

try:
    import numba
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a hard dependency in practice
    numba = None
    HAVE_NUMBA = False


def njit(*args, **kwargs):
    """``numba.njit(cache=True, nogil=True, error_model="numpy")``; kernels are top-level functions.

    error_model="numpy": x / 0 gives inf/nan like NumPy instead of raising; the default "python"
    model puts a zero test in front of every division, which stops LLVM vectorising the loop
    (bench/kernels.py, the "adamw" row).
    """
    kwargs.setdefault("cache", True)
    kwargs.setdefault("nogil", True)
    kwargs.setdefault("error_model", "numpy")
    if not HAVE_NUMBA:
        if args and callable(args[0]):
            return args[0]
        return lambda f: f
    if args and callable(args[0]):
        return _compile_lazily(args[0], kwargs)
    return lambda f: _compile_lazily(f, kwargs)


_cache_writable = True  # False once Numba found no folder it may write its cache to
_said = set()


def _say_once(topic: str, message: str) -> None:
    """One line on stderr, the first time `topic` comes up in this process."""
    if topic not in _said:
        _said.add(topic)
        print(f"tinygpt: {message}", file=sys.stderr)


def _compile_lazily(f, options):
    """Numba's dispatcher for `f` (compiled on its first call), with the disk cache if it can have one."""
    global _cache_writable
    if options["cache"] and _cache_writable:
        try:
            dispatcher = numba.njit(**options)(f)
        except RuntimeError as err:  # numba: "cannot cache function ...: no locator available"
            _cache_writable = False  # (any other trouble recurs, uncached, in the call below)
            reason = ("no writable folder for Numba's compile cache (read-only install and home; "
                      "set NUMBA_CACHE_DIR to one)" if "no locator" in str(err) else
                      f"Numba cannot cache the kernels ({' '.join(str(err).split())})")
            _say_once("no cache", f"{reason}: kernels compile anew in every process")
        else:
            if hasattr(dispatcher, "_cache"):  # under NUMBA_DISABLE_JIT it is the plain function
                dispatcher._cache = _TolerantCache(dispatcher._cache)
            return dispatcher
    return numba.njit(**{**options, "cache": False})(f)


class _TolerantCache:
    """Numba's cache of one function, except that an entry it cannot read (a damaged, truncated or
    unreadable .nbi/.nbc file) is named once on stderr and compiled afresh, and a cache it cannot
    write is left as it is: the compiled code is the same either way."""

    def __init__(self, cache):
        self._cache = cache

    def __getattr__(self, name):
        return getattr(self._cache, name)

    def load_overload(self, sig, target_context):
        try:
            return self._cache.load_overload(sig, target_context)
        except Exception as err:  # noqa: BLE001 - any unreadable entry is a cache miss
            entry = getattr(getattr(self._cache, "_cache_file", None), "_index_path",
                            self._cache.cache_path)
            _say_once("damaged cache", f"ignoring an unreadable Numba cache entry {entry} "
                     f"({type(err).__name__}: {' '.join(str(err).split())}); compiling it (and "
                     "any other such entry) afresh")
            with contextlib.suppress(Exception):
                self._cache.flush()  # an empty index, so the fresh compile is saved over the entry
            return None

    def save_overload(self, sig, data):
        with contextlib.suppress(Exception):  # an unwritable cache only costs the next process time
            self._cache.save_overload(sig, data)


_threads = int(numba.config.NUMBA_NUM_THREADS) if HAVE_NUMBA else (os.cpu_count() or 1)
_pool = None
_pool_size = 0
_pool_lock = threading.Lock()
CHUNKS_PER_THREAD = 4  # >1 so a thread that gets the CPU late just takes fewer chunks


def num_threads():
    return _threads


def set_num_threads(n):
    """Threads the kernels may use (>= 1)."""
    global _threads
    _threads = max(1, int(n))


def chunks(rows, min_rows):
    """Number of independent row chunks: 1 on one thread, else up to CHUNKS_PER_THREAD per thread,
    none smaller than `min_rows` rows."""
    if _threads == 1:
        return 1
    return max(1, min(CHUNKS_PER_THREAD * _threads, rows // max(1, min_rows)))


def chunk_bounds(c, nchunks, rows):
    """Rows [lo, hi) of chunk c."""
    return c * rows // nchunks, (c + 1) * rows // nchunks


if HAVE_NUMBA:
    chunk_bounds = njit(chunk_bounds)


class _ChunkedCall:
    """Chunks 0..n-1 of one kernel call, handed out one at a time to whichever thread asks first."""

    def __init__(self, kernel, args, n):
        self.kernel, self.args, self.n = kernel, args, n
        self.next = itertools.count()  # next() is atomic under the GIL
        self.left = n
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.error = None

    def work(self):
        while (c := next(self.next)) < self.n:
            try:
                self.kernel(*self.args, c, self.n)
            except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
                self.error = e
            with self.lock:
                self.left -= 1
                if self.left == 0:
                    self.done.set()


def run_chunks(kernel, nchunks, *args):
    """kernel(*args, c, nchunks) for every c in range(nchunks), on this thread and the pool.

    Chunks are claimed dynamically: when the other core is busy (another process), this thread
    simply runs more of them, and it only waits for chunks a pool thread has actually started.
    """
    global _pool, _pool_size
    if nchunks == 1:
        kernel(*args, 0, 1)
        return
    job = _ChunkedCall(kernel, args, nchunks)
    helpers = min(_threads, nchunks) - 1
    with _pool_lock:
        if _pool_size < helpers:  # (re)build once with enough workers; the old one winds down
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool_size = max(helpers, _threads - 1)
            _pool = ThreadPoolExecutor(_pool_size, thread_name_prefix="tinygpt-kernel")
        for _ in range(helpers):
            _pool.submit(job.work)
    job.work()
    job.done.wait()
    if job.error is not None:
        raise job.error
