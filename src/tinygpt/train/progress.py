"""What a training run prints while it runs: a tqdm bar on a terminal, plain lines elsewhere.

A bar redraws itself with carriage returns; written to a file or a CI log that is thousands of
partial lines, so when stderr is not a terminal `Progress` prints a plain status line every
`total / LINES_PER_RUN` steps instead. Evaluations and samples go to stdout as whole lines.

The first training step of a fresh install also compiles the Numba kernels (7-11 s measured on
a 2-core machine, up to ~15 s on a slow or busy one; later runs load numba's disk cache);
`compile_kernels` does that before the bar starts, says so when it takes long, and so keeps the
bar's time estimate from extrapolating a compile into the whole run."""
import sys
import threading
import time

from .. import kernels
from ..errors import InputError

LINES_PER_RUN = 20          # plain progress lines over a whole run (non-terminal output)
COMPILE_NOTICE_SECONDS = 2.0  # a warm-up slower than this is compiling, not loading the cache


def compile_kernels(dtype, stream=None, notify=True) -> float:
    """Compile (or load from numba's disk cache) every kernel for `dtype`; returns the seconds.
    Prints a notice to `stream` (stderr) once the warm-up has taken COMPILE_NOTICE_SECONDS,
    unless `notify` is False (a quiet run)."""
    stream = sys.stderr if stream is None else stream
    said = []

    def notice():
        said.append(True)
        print("compiling Numba kernels (first run only, about 20 s)...", file=stream,
              flush=True)

    timer = threading.Timer(COMPILE_NOTICE_SECONDS, notice)
    timer.daemon = True
    if notify:
        timer.start()
    try:
        seconds = kernels.warmup(dtype)
    finally:
        timer.cancel()
        if notify:
            timer.join()
    if said:
        print(f"kernels ready after {seconds:.0f} s (cached for later runs)", file=stream, flush=True)
    return seconds


class Progress:
    """Step progress of a run of `total` steps, `done` of them already (a resumed run).

    mode: "bar" (tqdm), "lines" (a plain line every total/LINES_PER_RUN steps), "none"; None picks
    "bar" when stderr is a terminal, else "lines". `write(text)` prints a whole line to stdout."""

    def __init__(self, total: int, done: int = 0, mode=None, desc="train", file=None):
        if mode is None:
            mode = "bar" if _is_terminal(sys.stderr) else "lines"
        if mode not in ("bar", "lines", "none"):
            raise InputError(f"progress mode must be 'bar', 'lines' or 'none', got {mode!r}")
        self.mode, self.total, self.done, self.desc = mode, total, done, desc
        self.every = max(1, total // LINES_PER_RUN)
        self.start, self.start_done = time.perf_counter(), done
        self.bar = None
        if mode == "bar":
            from tqdm.auto import tqdm
            # smoothing=0: the estimate is the average rate since the clock started, and the clock
            # restarts after the first step (below), whose one-time costs it would extrapolate
            self.bar = tqdm(total=total, initial=done, unit="step", dynamic_ncols=True, desc=desc,
                            smoothing=0, file=file)

    def step(self, loss: float, lr: float, tokens_per_second: float) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            if self.done == self.start_done + 1:
                self.bar.initial, self.bar.start_t = self.bar.n, time.time()  # tqdm's clock
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_second:.0f}")
        elif self.mode == "lines" and (self.done % self.every == 0 or self.done == self.total):
            elapsed = time.perf_counter() - self.start
            rate = (self.done - self.start_done) / max(elapsed, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            print(f"{self.desc}: step {self.done}/{self.total}, loss {loss:.3f}, lr {lr:.2e}, "
                  f"{tokens_per_second:.0f} tok/s, {_clock(elapsed)} elapsed, ~{_clock(left)} left",
                  file=sys.stderr, flush=True)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _clock(seconds: float) -> str:
    if seconds != seconds:  # NaN: no rate yet
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"
