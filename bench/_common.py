"""Helpers shared by the bench scripts: background load, thread control, CPU peak, tables.

Nothing here imports tinygpt, NumPy or torch at module level, so a script can set thread
variables (``thread_env``) before any of them loads.

Background load. ``LoadMeter`` reads the busy jiffies of all CPUs from /proc/stat and subtracts
this process's own CPU time (all its threads, ``RUSAGE_SELF``); what is left is the CPU other
processes used, in cores, averaged over the measured wall time. A meter can be started and
stopped many times (alternating runs bill each framework only for its own windows). /proc/stat
ticks every 10 ms, so a window much shorter than that is noise: time blocks of >= ~0.2 s.
A figure taken with more than ``BUSY_CORES`` of background on a 2-thread run is not reported
(threads spin at barriers while time-sliced, and 2-thread runs collapse).
"""
import math
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")  # the package lives in src/tinygpt
BUSY_CORES = 0.2          # background above this (cores) makes a multi-thread figure untrustworthy
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
# Idle pause before timing one library after another. OpenBLAS's worker threads spin-wait (with
# sched_yield) for 2^28 cycles, ~0.1 s at 2.6 GHz, after every call: a library timed sooner shares
# the second core with that spinning thread. Measured on the 2-vCPU VM with a 0.05 s pause: torch's
# 2-thread matmuls no faster than its 1-thread ones, a 0.79 ms Numba product taking 18.8 ms.
IDLE_S = 0.15
# ...and after that pause, untimed calls for this long before timing: idle vCPUs come back slowly.
# Measured on the AMD Zen 5 VM (2026-12-03), a (2, 12, 256, 256) causal softmax timed in blocks of 7
# straight after the pause: 0.96 ms on 1 thread, 1.43 ms on 2; back to back with no pause 0.68 and
# 0.40; after 0.1 s of untimed calls 0.80 and 0.53. Without this the short kernels (and the bench-tiny
# model's steps) were timed coming out of idle, which is not how a training loop runs them.
WARM_S = 0.1


# OpenBLAS's worker threads spin (yielding) for 2^28 cycles after every product unless
# OPENBLAS_THREAD_TIMEOUT (read once, when NumPy loads OpenBLAS) says otherwise; the tinygpt kernels
# that run between a training step's products (attention, GELU, layer norm, AdamW) then share the
# second core with a spinning thread. 4 (2^4 cycles: sleep at once) is what examples/ch05_pretrain.py
# sets for itself: bench/ch05_products.py measured a 124M step 2.94 -> 2.74 s with it (attention
# 0.26 -> 0.15 s a step; the products unchanged). Benches that train set it before NumPy loads.
OPENBLAS_TIMEOUT_FOR_TRAINING = "4"


def openblas_threads_sleep():
    """Before NumPy is imported: OpenBLAS's idle threads sleep at once (unless the variable is set)."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", OPENBLAS_TIMEOUT_FOR_TRAINING)


def warm(fn, seconds=WARM_S):
    """Call fn untimed until `seconds` have passed (at least once)."""
    end = time.perf_counter() + seconds
    fn()
    while time.perf_counter() < end:
        fn()


def require(*modules):
    """Exit with the install command if torch or the book's package is missing (before any child
    process starts). llms-from-scratch cannot be an extra: its metadata pins TensorFlow, JupyterLab
    and numpy<2.1, so it is installed with --no-deps."""
    import importlib.util
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"bench needs {', '.join(missing)}: pip install -e \".[bench]\" && "
                 "pip install --no-deps llms-from-scratch")


# ---------------------------------------------------------------- background load

def cpu_busy_seconds():
    """CPU-seconds all CPUs spent busy since boot (/proc/stat, minus idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds(who=resource.RUSAGE_SELF):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


class LoadMeter:
    """Accumulates (other processes' CPU-seconds, wall seconds) over start()/stop() windows.

    ``who=resource.RUSAGE_CHILDREN`` measures around a subprocess instead (the child's CPU is
    then 'own'; it is only counted once the child has been waited for)."""

    def __init__(self, who=resource.RUSAGE_SELF):
        self.who = who
        self.other = 0.0
        self.wall = 0.0
        self._t = None

    def start(self):
        self._t = (cpu_busy_seconds(), own_cpu_seconds(self.who), time.perf_counter())
        return self

    def stop(self):
        b0, o0, w0 = self._t
        wall = time.perf_counter() - w0
        own = own_cpu_seconds(self.who) - o0
        self.other += max(0.0, (cpu_busy_seconds() - b0) - own)
        self.wall += wall
        self._t = None
        return wall

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def cores(self):
        """Average background load in cores (nan before any window)."""
        return self.other / self.wall if self.wall > 0 else float("nan")


def busy(load_cores, threads):
    """True when a figure on `threads` threads was taken with too much background load."""
    return threads > 1 and not load_cores <= BUSY_CORES  # nan counts as busy


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- threads

def thread_env(threads, base=None):
    """A copy of the environment with every thread-count variable set to `threads` (for a child:
    BLAS and OpenMP read them once, at load)."""
    env = dict(os.environ if base is None else base)
    for var in THREAD_VARS:
        env[var] = str(threads)
    return env


def framework_parser(doc):
    """The command line of a bench that runs each framework in a child of its own: --threads,
    --only tinygpt|torch, and the hidden --child / --framework its children get."""
    import argparse
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", choices=["tinygpt", "torch"], default=None)
    p.add_argument("--framework", help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p


def run_child(script, framework, threads, *extra) -> dict:
    """Run `script --child --framework F --threads N *extra` with every thread variable set to N
    (read once, when BLAS and OpenMP load) and return the JSON its last stdout line holds; exit
    with the child's stderr if it failed."""
    import json
    cmd = [sys.executable, os.path.abspath(script), "--child", "--framework", framework,
           "--threads", str(threads), *extra]
    res = subprocess.run(cmd, env=thread_env(threads), capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        sys.stderr.write(res.stderr[-4000:])
        raise SystemExit(f"{framework} run failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def set_threads(threads):
    """In-process: torch (if loaded), tinygpt's kernel pool (if loaded) and every BLAS/OpenMP pool
    threadpoolctl sees. Returns a short description of what each library ended up with."""
    got = {}
    if "torch" in sys.modules:
        import torch
        torch.set_num_threads(threads)
        got["torch"] = torch.get_num_threads()
    if "tinygpt.kernels" in sys.modules:
        from tinygpt import kernels
        kernels.set_num_threads(threads)
        got["tinygpt"] = kernels.num_threads()
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        got["threadpoolctl"] = "not installed"
        return got
    threadpool_limits(threads)
    for pool in threadpool_info():
        name = f"{pool['internal_api']}:{os.path.basename(pool['filepath'])}"
        got[name] = pool["num_threads"]
    return got


# ---------------------------------------------------------------- machine

def cpu_info():
    """Model name, cores, GHz (max 'cpu MHz' of /proc/cpuinfo, else lscpu's max MHz), SIMD lanes."""
    model, mhz, flags = platform.processor() or platform.machine(), [], set()
    vendor, family = "", 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "model name":
                    model = val
                elif key == "cpu MHz":
                    mhz.append(float(val))
                elif key == "flags" and not flags:
                    flags = set(val.split())
                elif key == "vendor_id":
                    vendor = val
                elif key == "cpu family" and val.isdigit():
                    family = int(val)
    except OSError:
        pass
    source = "/proc/cpuinfo 'cpu MHz'"
    if not mhz:
        try:
            out = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
            for line in out.splitlines():
                if line.startswith(("CPU max MHz", "CPU MHz")):
                    mhz.append(float(line.split(":")[1]))
            source = "lscpu"
        except (OSError, ValueError):
            pass
    ghz = max(mhz) / 1000 if mhz else float("nan")
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    return {"model": model, "cores": os.cpu_count() or 1, "ghz": ghz, "ghz_source": source,
            "lanes_fp32": lanes, "fma": "fma" in flags or "avx512f" in flags, "vendor": vendor,
            "family": family}


def fma_units_per_cycle(info):
    """Full-width FMAs a core issues per cycle: 2 on Intel AVX-512 server cores and on AVX2 cores;
    1 on AMD Zen 4 (family 25), which runs a 512-bit FMA as two halves on its two 256-bit pipes."""
    if info.get("vendor") == "AuthenticAMD" and info.get("family") == 25 and info["lanes_fp32"] == 16:
        return 1
    return 2


def fp32_peak(info, cores=None, fma_units=None, ghz=None):
    """(GFLOP/s, formula string): cores x GHz x FMA units x fp32 lanes x 2 flops per FMA."""
    cores = info["cores"] if cores is None else cores
    ghz = info["ghz"] if ghz is None else ghz
    fma_units = fma_units_per_cycle(info) if fma_units is None else fma_units
    peak = cores * ghz * fma_units * info["lanes_fp32"] * 2
    return peak, (f"{cores} core(s) x {ghz:.2f} GHz x {fma_units} FMA x {info['lanes_fp32']} fp32 lanes "
                  f"x 2 = {peak:.0f} GFLOP/s")


def gemm_gflops(repeats=7):
    """Measured ceiling: GFLOP/s of np.matmul on a GPT-2 Linear shape, (512, 768) @ (768, 3072)
    float32, best of `repeats`, with whatever BLAS threads the process has."""
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.standard_normal((512, 768), dtype=np.float32)
    w = rng.standard_normal((3072, 768), dtype=np.float32)
    out = np.matmul(a, w.T)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, w.T, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * 512 * 768 * 3072 / best / 1e9


def versions():
    """Versions of Python and of whichever of numpy / numba / torch / llms_from_scratch import."""
    out = {"python": platform.python_version()}
    for mod in ("numpy", "numba", "torch", "threadpoolctl"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = "-"
    try:
        from importlib.metadata import version
        out["llms-from-scratch"] = version("llms-from-scratch")
    except Exception:  # noqa: BLE001 - not installed
        out["llms-from-scratch"] = "-"
    try:
        import numpy as np
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        out["numpy BLAS"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 - older numpy: no BLAS line in the header
        out["numpy BLAS"] = "?"
    return out


def header(title):
    """The '# ...' lines every bench prints first: date, host, CPU, versions, thread variables, load."""
    info = cpu_info()
    v = versions()
    simd = {16: "AVX-512", 8: "AVX2"}.get(info["lanes_fp32"], "SSE")
    lines = [f"# {title}  {time.strftime('%Y-%m-%d %H:%M')}  host {platform.node()}",
             f"# CPU: {info['model']}, {info['cores']} cpus, {info['ghz']:.2f} GHz ({info['ghz_source']}), {simd}",
             "# versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
             "# thread variables: " + ", ".join(
                 f"{var}={os.environ.get(var, 'unset')}"
                 for var in THREAD_VARS + ("TINYGPT_KERNELS", "OPENBLAS_THREAD_TIMEOUT")),
             f"# loadavg at start: {loadavg()}"]
    return "\n".join(lines)


# ---------------------------------------------------------------- output

def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return float("nan") if not n else xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def write_json(path, payload):
    import json
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)


def markdown_table(headers, rows, align=None):
    """A markdown table as a string; `align` is one of 'l'/'r' per column (default: first left,
    the others right). Cells are str()-ed; widths fit the longest cell."""
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    width = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w)
                                 for c, w, a in zip(r, width, align)) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                         for w, a in zip(width, align)) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def fmt(value, spec=".1f", hidden=False):
    """A number for a table cell; `hidden` (taken under load) prints 'busy' instead."""
    if value is None or math.isnan(value):
        return "-"
    return "busy" if hidden else format(value, spec)


def hf_class(name):
    """A transformers model class, imported with bench/ off sys.path: transformers imports an
    optional package named `kernels`, which bench/kernels.py would shadow."""
    here = os.path.dirname(os.path.abspath(__file__))
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        import transformers
        return getattr(transformers, name)
    finally:
        sys.path[:] = saved
