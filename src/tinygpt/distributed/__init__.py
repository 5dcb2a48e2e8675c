"""Data parallelism over MPI (book appendix A.9's DistributedDataParallel, done the way llm.c
does it across machines): `mpiexec -n N tinygpt pretrain ...` runs N ranks, each holding the
whole model and running 1/N of every batch; `DataParallel.all_reduce` sums the gradients (each
rank's loss is already weighted by its share of the batch, train/trainer.py) so that every rank
takes the same optimizer step, and `DataParallel.sum` adds up the ranks' shares of an evaluation.

Imported only when a launch has several ranks (cli/pretrain.py), so `import tinygpt` never
loads mpi4py; `pip install "tinygpt[mpi]"` installs it with an MPI from the package index.

Faults: an error on one rank would leave the others waiting in the next collective forever, so
`DataParallel.guard()` turns it into `MPI_Abort` after printing the rank's message, and the
launcher ends every rank. A rank that dies outright (killed, out of memory, its machine gone)
raises nothing anywhere: the survivors would wait in their next collective. Each collective
therefore runs under a watchdog (`_Watchdog`): a rank that has waited `timeout` seconds in one
prints which collective it waited in and calls `MPI_Abort` itself, whatever the launcher does
(MPICH's Hydra also ends the job when a process dies, unless started with
-disable-auto-cleanup; a cluster's launcher may not). The timeout must exceed the longest time
one rank can run ahead of another: a step's compute is the same on every rank, but rank 0
alone saves checkpoints, so it is minutes by default (`--rank-timeout`). Rank 0 writes
checkpoints atomically (tinygpt.files.atomic_write), so the last one stays whole and resumable."""
import contextlib
import hashlib
import json
import os
import sys
import threading
import time

import numpy as np

from ..errors import InputError, MissingDependencyError, TrainingError

# Gradients are summed in buckets of this size (few, large messages), after the backward pass.
# Overlapping the sums with the backward pass (an Iallreduce per bucket started from gradient
# hooks, as torch's DDP does) was measured and not kept: on this 2-core machine with 2 ranks it
# was no faster (slower in 2 of 3 pairings, 4% faster in one; busy machine, 2026-12-07), since
# MPICH moves a non-blocking sum on one machine only inside MPI calls and both cores are busy
# with the backward pass; numbers and the experiment: bench/README.md, bench/mpi_scaling.py
# --overlap. Re-measure across machines, where the network card moves the bytes.
BUCKET_BYTES = 16 << 20
RANK_TIMEOUT = 600.0      # seconds a rank waits in one collective before it ends the job
ABORT_GRACE = 20.0        # seconds MPI_Abort gets to end the job before this rank exits alone


class RankLostError(TrainingError):
    """Another rank stopped answering: it died, or hangs; the job ends on every rank."""


class DataParallel:
    """This process's place among the ranks of an MPI communicator, and the collectives the
    trainer needs: `broadcast_parameters`, `all_reduce` (gradients and loss), `check_same`."""

    def __init__(self, comm, timeout: float = RANK_TIMEOUT, command: str = "pretrain"):
        from mpi4py import MPI
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.command = command
        comm.Set_errhandler(MPI.ERRORS_RETURN)   # an MPI failure raises here, for guard()
        self._buffers = {}
        self.watchdog = _Watchdog(self, timeout)

    @classmethod
    def from_launch(cls, timeout: float = RANK_TIMEOUT, command: str = "pretrain") -> "DataParallel":
        """The world communicator of the running MPI launch; a collective that waits longer
        than `timeout` seconds for the other ranks ends the job (`_Watchdog`)."""
        try:
            from mpi4py import MPI
        except ImportError as err:
            raise MissingDependencyError(
                f"this run was started with several MPI ranks, but mpi4py cannot be imported "
                f"({err}): install it with pip install \"tinygpt[mpi]\" (it brings an MPI from "
                "the package index when the system has none)") from None
        return cls(MPI.COMM_WORLD, timeout, command)

    def broadcast_parameters(self, params) -> None:
        """Every rank's parameters become rank 0's."""
        for p in params:
            buffer = np.ascontiguousarray(p.data)   # p.data itself when contiguous
            with self.watchdog.waiting("the broadcast of rank 0's parameters"):
                self.comm.Bcast(buffer, root=0)
            if buffer is not p.data:
                p.data[...] = buffer

    def all_reduce(self, params, loss: float) -> float:
        """Sum each parameter's gradient over the ranks, in buckets of BUCKET_BYTES; returns the
        sum of `loss` over the ranks."""
        from mpi4py import MPI
        params = [p for p in params if p.grad is not None]
        for bucket in _buckets(params, BUCKET_BYTES):
            dtype = bucket[0].grad.dtype
            size = sum(p.grad.size for p in bucket)
            key = (dtype.str, size)
            if key not in self._buffers:
                self._buffers[key] = np.empty(size, dtype)
            flat, pos = self._buffers[key], 0
            for p in bucket:
                flat[pos:pos + p.grad.size] = p.grad.reshape(-1)
                pos += p.grad.size
            with self.watchdog.waiting("the gradient all-reduce"):
                self.comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
            pos = 0
            for p in bucket:
                p.grad = flat[pos:pos + p.grad.size].reshape(p.grad.shape).copy()
                pos += p.grad.size
        return self.sum([loss])[0]

    def sum(self, values) -> list:
        """The elementwise sum over the ranks of a list of floats (a loss, evaluation shares)."""
        from mpi4py import MPI
        flat = np.asarray(values, np.float64)
        with self.watchdog.waiting("the sum of the losses"):
            self.comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        return flat.tolist()

    def check_same(self, what: str, value) -> None:
        """Refuse to start (on every rank) unless `value` is the same on every rank."""
        digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
        with self.watchdog.waiting("the start-up check of the command line"):
            digests = self.comm.allgather(digest)
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            raise InputError(f"ranks {differ} were started with another {what} than rank 0: "
                             "start every rank with the same command, data and files")

    @contextlib.contextmanager
    def guard(self):
        """An error on this rank prints its message and aborts the whole job (MPI_Abort), so
        no other rank waits for it forever; Ctrl-C and SIGTERM reach every rank from the
        launcher and end each one as in a plain run."""
        try:
            yield
        except KeyboardInterrupt:
            raise
        except BaseException as err:
            self.abort(err)
            raise

    def abort(self, err) -> None:
        """Print `err` as one line naming this rank, then end every rank with MPI_Abort; should
        the MPI library fail to (its launcher gone), this process exits by itself."""
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"tinygpt {self.command}: error on rank {self.rank} of {self.size}: {message}; "
              "ending every rank", file=sys.stderr, flush=True)
        exit_later = threading.Timer(ABORT_GRACE, os._exit, (2,))
        exit_later.daemon = True
        exit_later.start()
        self.comm.Abort(2)


class _Watchdog:
    """A thread that ends the job when this rank has waited longer than `timeout` seconds in
    one collective: a rank that died never arrives, and nothing else would tell the others.
    (mpi4py releases the GIL inside a blocking call, so this thread runs while the main one
    waits.)"""

    def __init__(self, dp, timeout: float):
        if not timeout > 0:
            raise InputError(f"the rank timeout must be a positive number of seconds, got {timeout!r}")
        self.dp, self.timeout = dp, float(timeout)
        self.what, self.since, self.thread = None, None, None

    @contextlib.contextmanager
    def waiting(self, what: str):
        if self.thread is None:
            self.thread = threading.Thread(target=self._watch, name="tinygpt-rank-watchdog",
                                           daemon=True)
            self.thread.start()
        self.what, self.since = what, time.monotonic()
        try:
            yield
        finally:
            self.since = None

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            what, since = self.what, self.since
            if since is not None and time.monotonic() - since > self.timeout:
                self.dp.abort(RankLostError(
                    f"waited {time.monotonic() - since:.0f} s (--rank-timeout {self.timeout:g}) "
                    f"for the other ranks in {what}: a rank has died or hangs; the last "
                    "checkpoint is kept"))
                return


def _buckets(params, limit):
    """Consecutive runs of parameters of one dtype, each about `limit` bytes or one parameter."""
    bucket, size = [], 0
    for p in params:
        if bucket and (size + p.grad.nbytes > limit or p.grad.dtype != bucket[0].grad.dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(p)
        size += p.grad.nbytes
    if bucket:
        yield bucket

