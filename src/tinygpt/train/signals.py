"""SIGINT (Ctrl-C) and SIGTERM (`timeout`, job schedulers) during training.

`train_model` installs `SignalGuard` for as long as it runs, in the main thread only (Python
delivers signals there), and puts the previous handlers back when it returns; `import tinygpt`
installs nothing. Either signal raises `Interrupted` (a KeyboardInterrupt), except inside a
`guard.deferred()` block -- the optimizer step and the bookkeeping that goes with it -- where the
signal is remembered and raised when the block ends. So whenever `Interrupted` reaches the
training loop, the weights, the optimizer and the loop state all describe the same completed
step, and that is what gets saved. A signal whose handler is SIG_IGN (e.g. under `nohup`) stays
ignored."""
import contextlib
import signal
import threading

SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if s is not None)


class Interrupted(KeyboardInterrupt):
    """Training was stopped by a signal; `signum` says which (exit status 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class SignalGuard:
    """Context manager: route SIGINT/SIGTERM to `Interrupted`, deferring them in `deferred()`."""

    def __init__(self):
        self._previous = {}
        self._depth = 0
        self.pending = None  # a signal number that arrived inside deferred()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                old = signal.getsignal(sig)
                if old is signal.SIG_IGN or old is None:  # ignored, or not set from Python
                    continue
                self._previous[sig] = old
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous.clear()
        return False

    def _handle(self, signum, frame):
        if self._depth:
            self.pending = self.pending or signum
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self, raise_pending: bool = True):
        """Hold back signals while the block runs; raise one that arrived once it has finished
        (unless `raise_pending` is False: the caller is already stopping)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0 and self.pending is not None and raise_pending:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)
