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
4. `--overlap`: whether overlapping the all-reduce with the backward pass would pay here. Under
   `mpiexec -n 2`, one process alternates three ways of running a step's backward pass on the
   same batch: alone; then `DataParallel.all_reduce` after it (what tinygpt does); and
   `OverlappedAllReduce`, which starts a non-blocking `Iallreduce` for each bucket of gradients
   as soon as autograd has finished the bucket's last one (gradient hooks on the parameters,
   buckets in the order backward completes them, every hook polling the open requests so that
   MPI makes progress). Medians of the alternating repeats, and a check that both give the
   same gradients. The result and the decision are in bench/README.md.

Needs the [mpi] extra (mpi4py and an mpiexec). The numbers are this machine's: re-run to get
yours. The corpus is small, so the first steps' kernel compilation is excluded by a warm-up run."""
import argparse
import contextlib
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


class OverlappedAllReduce:
    """The gradient all-reduce overlapped with the backward pass, as torch's DDP does it: use as
    `with OverlappedAllReduce(dp, params): loss.backward()`; on exit every parameter's .grad is
    the sum over the ranks. (The experiment of `--overlap`; tinygpt's trainer does not use it.)"""

    def __init__(self, dp, params, bucket_bytes=None):
        import numpy as np
        from mpi4py import MPI
        from tinygpt.distributed import BUCKET_BYTES, _buckets
        self.dp, self.MPI, self.params = dp, MPI, list(params)
        for p in self.params:   # _buckets sizes by .grad; backward reaches the last layers first
            p.grad = np.zeros_like(p.data)
        self.buckets = list(_buckets(self.params[::-1], bucket_bytes or BUCKET_BYTES))
        self.flats, self.where = [], {}
        for b, bucket in enumerate(self.buckets):
            pos = 0
            for p in bucket:
                self.where[id(p)] = (b, pos)
                pos += p.data.size
            self.flats.append(np.empty(pos, bucket[0].data.dtype))

    def __enter__(self):
        for p in self.params:
            p.grad = None
        self.left = [len(bucket) for bucket in self.buckets]
        self.requests = []
        self.handles = [p.register_hook(self.hook_for(p)) for p in self.params]
        return self

    def hook_for(self, p):
        def hook(grad):
            b, pos = self.where[id(p)]
            total = grad if p.grad is None else grad + p.grad   # (grad-accum's earlier parts)
            self.flats[b][pos:pos + p.data.size] = total.reshape(-1)
            self.left[b] -= 1
            if self.left[b] == 0:
                self.requests.append(self.dp.comm.Iallreduce(self.MPI.IN_PLACE, self.flats[b],
                                                             op=self.MPI.SUM))
            if self.requests:
                self.MPI.Request.Testall(self.requests)   # drive the open all-reduces on
        return hook

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.MPI.Request.Waitall(self.requests)
        if exc[0] is None:
            for p in self.params:
                b, pos = self.where[id(p)]
                p.grad = self.flats[b][pos:pos + p.data.size].reshape(p.data.shape).copy()


def overlap_worker(config, batch_size, repeats):
    """Run under mpiexec: the backward pass alone, then all-reduced, then overlapped (ms)."""
    import numpy as np
    from tinygpt.core.random import manual_seed
    from tinygpt.distributed import DataParallel
    from tinygpt.model import GPTModel
    from tinygpt.train.loss import calc_loss_batch
    from tinygpt.train.pretrain import resolve_config
    dp = DataParallel.from_launch()
    cfg = resolve_config(config)
    manual_seed(dp.rank)
    model = GPTModel(cfg)
    model.eval()   # no dropout: every way runs the same arithmetic on the same batch
    dp.broadcast_parameters(model.parameters())
    params = list(model.parameters())
    ids = np.random.default_rng(dp.rank).integers(0, cfg["vocab_size"], (batch_size, cfg["context_length"] + 1))
    overlapped = OverlappedAllReduce(dp, params)
    times, grads = {"backward": [], "then all-reduce": [], "overlapped": []}, {}
    for i in range(repeats + 1):
        for mode in times:
            for p in params:
                p.grad = None
            loss = calc_loss_batch(ids[:, :-1], ids[:, 1:], model)
            dp.comm.Barrier()
            start = time.perf_counter()
            with overlapped if mode == "overlapped" else contextlib.nullcontext():
                loss.backward()
            if mode == "then all-reduce":
                dp.all_reduce(params, 0.0)
            dp.comm.Barrier()
            if i:   # the first round warms up
                times[mode].append(time.perf_counter() - start)
            grads[mode] = [p.grad for p in params]
    same = all(np.allclose(a, b, rtol=1e-5, atol=1e-7)
               for a, b in zip(grads["then all-reduce"], grads["overlapped"]))
    if dp.rank == 0:
        print(" ".join(f"{mode.replace(' ', '_')}={median(t) * 1e3:.1f}" for mode, t in times.items()),
              f"same_gradients={same}", f"buckets={len(overlapped.buckets)}")


def overlap(mpiexec, args):
    """`--overlap`: pairs the two all-reduce paths in one 2-rank run and prints a table."""
    out = subprocess.run([mpiexec, "-n", "2", sys.executable, os.path.abspath(__file__),
                          "--overlap-worker", "--config", args.config, "--batch-size",
                          str(args.batch_size), "--repeats", str(args.repeats)],
                         env={**thread_env(1), "PYTHONPATH": SRC}, capture_output=True, text=True,
                         timeout=1800)
    if out.returncode:
        sys.exit(f"overlap worker failed:\n{out.stdout}\n{out.stderr}")
    found = dict(re.findall(r"([\w-]+)=(\S+)", out.stdout))
    backward, after, overlapped = (float(found[k]) for k in ("backward", "then_all-reduce", "overlapped"))
    print(header(f"Overlapping the all-reduce with the backward pass ({args.config}, batch "
                 f"{args.batch_size} per rank, 2 ranks x 1 thread, median of {args.repeats})"))
    print(markdown_table(["backward alone ms", "+ all-reduce after ms", "overlapped ms",
                          "all-reduce cost after / overlapped ms", "same gradients", "buckets"],
                         [[f"{backward:.1f}", f"{after:.1f}", f"{overlapped:.1f}",
                           f"{after - backward:.1f} / {overlapped - backward:.1f}",
                           found["same_gradients"], found["buckets"]]]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--overlap", action="store_true", help="only the overlap experiment (4.)")
    parser.add_argument("--allreduce-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--overlap-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allreduce_worker:
        return allreduce_worker(args.config, args.repeats)
    if args.overlap_worker:
        return overlap_worker(args.config, args.batch_size, args.repeats)
    import importlib.util
    mpiexec = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    if mpiexec is None or importlib.util.find_spec("mpi4py") is None:
        sys.exit("this bench needs mpi4py and an mpiexec: pip install -e \".[mpi]\"")
    if args.overlap:
        return overlap(mpiexec, args)
    print(header("MPI data parallelism: 1 rank x 2 threads against 2 ranks x 1 thread"))
    work = tempfile.mkdtemp(prefix="tinygpt-mpi-bench-")
    try:
        from tinygpt.assets import asset_path
        data = os.path.join(work, "data")
        subprocess.run(tinygpt("prepare-data", str(asset_path("the-verdict.txt")), "--out", data,
                               "--jobs", "1", "--quiet"), check=True, env=thread_env(1, {**os.environ,
                               "PYTHONPATH": SRC}), capture_output=True, timeout=600)
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
                             capture_output=True, text=True, check=True, timeout=600).stdout
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
