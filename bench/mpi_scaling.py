"""Data parallelism on this machine, and what N machines of its kind would give (issue 43).

    python bench/mpi_scaling.py [--config small] [--steps 8] [--batch-size 4]

1. Throughput of `tinygpt pretrain --data` as 1 rank x 2 threads against `mpiexec -n 2` ranks
   x 1 thread each, on the same prepared corpus (the book's short story), the same global batch
   and steps (the training loop's tokens/s as pretrain reports it).
2. The gradient all-reduce's cost per step: `DataParallel.all_reduce` on gradients the size of
   the model's, timed under `mpiexec -n 2` (the median of repeats), with the bytes it moves.
3. A scaling estimate for N machines: a ring all-reduce sends 2 (N - 1) / N times the gradient
   bytes per rank and step; against a network of bandwidth B that is the communication time,
   set beside the step's compute time per rank (the 1-rank step time split N ways), with no
   overlap of the two (tinygpt all-reduces after the backward pass).

Needs the [mpi] extra (mpi4py and an mpiexec). The numbers are this machine's: re-run to get
yours. The corpus is small, so the first steps' kernel compilation is excluded by a warm-up run."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import SRC, header, markdown_table, median, thread_env  # noqa: E402

NETWORKS = {"1 GbE": 1e9 / 8, "10 GbE": 10e9 / 8, "100 Gb InfiniBand": 100e9 / 8}


def tinygpt(*args):
    return [sys.executable, "-m", "tinygpt", *args]


def run(command, threads):
    env = thread_env(threads)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    started = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{out.stdout}\n{out.stderr}")
    found = re.search(r"training loop ([\d.]+) s, (\d+) tokens/s", out.stdout)
    return float(found.group(1)), float(found.group(2)), time.perf_counter() - started


def allreduce_worker(config, repeats):
    """Run under mpiexec: time all_reduce on the gradients of `config`'s model."""
    import numpy as np
    from tinygpt.distributed import DataParallel
    from tinygpt.model import GPTModel
    from tinygpt.train.pretrain import resolve_config
    dp = DataParallel.from_launch()
    params = GPTModel(resolve_config(config)).parameters()
    for p in params:
        p.grad = np.ones_like(p.data)
    times = []
    for _ in range(repeats + 2):
        dp.comm.Barrier()
        start = time.perf_counter()
        dp.all_reduce(params, 1.0)
        times.append(time.perf_counter() - start)
    if dp.rank == 0:
        nbytes = sum(p.grad.nbytes for p in params)
        print(f"allreduce {median(times[2:]) * 1e3:.2f} ms {nbytes} bytes "
              f"{sum(p.data.size for p in params)} parameters")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--allreduce-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allreduce_worker:
        return allreduce_worker(args.config, args.repeats)
    import importlib.util
    mpiexec = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    if mpiexec is None or importlib.util.find_spec("mpi4py") is None:
        sys.exit("this bench needs mpi4py and an mpiexec: pip install -e \".[mpi]\"")
    print(header("MPI data parallelism: 1 rank x 2 threads against 2 ranks x 1 thread"))
    work = tempfile.mkdtemp(prefix="tinygpt-mpi-bench-")
    try:
        from tinygpt.assets import asset_path
        data = os.path.join(work, "data")
        subprocess.run(tinygpt("prepare-data", str(asset_path("the-verdict.txt")), "--out", data,
                               "--jobs", "1", "--quiet"), check=True, env=thread_env(1, {**os.environ,
                               "PYTHONPATH": SRC}), capture_output=True)
        train = ["pretrain", "--data", data, "--config", args.config, "--batch-size",
                 str(args.batch_size), "--max-steps", str(args.steps), "--eval-freq", str(args.steps),
                 "--eval-iter", "1", "--start-context", "", "--quiet"]
        run(tinygpt(*train, "--out", os.path.join(work, "warm")), 2)   # compile and cache kernels
        rows, results = [], {}
        for name, command, threads in (
                ("1 rank x 2 threads", tinygpt(*train, "--out", os.path.join(work, "one")), 2),
                ("2 ranks x 1 thread", [mpiexec, "-n", "2", *tinygpt(*train, "--out",
                                                                     os.path.join(work, "two"))], 1)):
            seconds, tokens_per_s, wall = run(command, threads)
            results[name] = seconds / args.steps
            rows.append([name, f"{tokens_per_s:,.0f}", f"{seconds / args.steps * 1e3:.0f}", f"{wall:.1f}"])
        print(markdown_table(["layout", "tokens/s", "ms/step", "wall s (incl. start)"], rows))
        out = subprocess.run([mpiexec, "-n", "2", sys.executable, os.path.abspath(__file__),
                              "--allreduce-worker", "--config", args.config, "--repeats",
                              str(args.repeats)], env={**thread_env(1), "PYTHONPATH": SRC},
                             capture_output=True, text=True, check=True).stdout
        ms, nbytes, nparams = re.search(r"allreduce ([\d.]+) ms (\d+) bytes (\d+)", out).groups()
        print(f"\nall-reduce of {int(nparams):,} parameters' gradients ({int(nbytes) / 2**20:.1f} MiB) "
              f"over 2 ranks: {float(ms):.2f} ms per step "
              f"({float(ms) / 1e3 / results['2 ranks x 1 thread']:.1%} of a 2-rank step)")
        estimate(int(nbytes), results["1 rank x 2 threads"] * 2)   # 1-thread compute, ~2x the 2-thread
    finally:
        shutil.rmtree(work, ignore_errors=True)


def estimate(grad_bytes, step_seconds_one_core):
    """Efficiency of N machines (one rank each) at a fixed global batch, by network."""
    print(f"\nestimate: ring all-reduce, {grad_bytes / 2**20:.1f} MiB of gradients, one "
          f"rank's whole step {step_seconds_one_core * 1e3:.0f} ms on one core")
    rows = []
    for n in (2, 4, 8, 16):
        compute = step_seconds_one_core / n
        row = [str(n), f"{compute * 1e3:.0f}"]
        for bandwidth in NETWORKS.values():
            comm = 2 * (n - 1) / n * grad_bytes / bandwidth
            row.append(f"{comm * 1e3:.1f} ms, {compute / (compute + comm):.0%}")
        rows.append(row)
    print(markdown_table(["machines", "compute ms/step", *NETWORKS], rows))


if __name__ == "__main__":
    main()
