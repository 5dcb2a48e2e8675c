"""Data parallelism over MPI (book appendix A.9's DistributedDataParallel, done the way llm.c
does it across machines): `mpiexec -n N tinygpt pretrain ...` runs N ranks, each holding the
whole model and running 1/N of every batch; `DataParallel.all_reduce` sums the gradients (each
rank's loss is already weighted by its share of the batch, train/trainer.py) so that every rank
takes the same optimizer step.

Imported only when a launch has several ranks (cli/pretrain.py), so `import tinygpt` never
loads mpi4py; `pip install "tinygpt[mpi]"` installs it with an MPI from the package index.

Faults: an error on one rank would leave the others waiting in the next collective forever, so
`DataParallel.guard()` turns it into `MPI_Abort` after printing the rank's message, and the
launcher ends every rank. A rank killed outright is noticed by the launcher itself (MPICH's
Hydra and Open MPI's mpirun end the job when a process dies). Rank 0 writes checkpoints
atomically (tinygpt.files.atomic_write), so the last one stays whole and resumable."""
import contextlib
import hashlib
import json
import sys

import numpy as np

from ..errors import InputError, MissingDependencyError

BUCKET_BYTES = 16 << 20   # gradients are summed in buckets of this size: few, large messages


class DataParallel:
    """This process's place among the ranks of an MPI communicator, and the collectives the
    trainer needs: `broadcast_parameters`, `all_reduce` (gradients and loss), `check_same`."""

    def __init__(self, comm):
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self._buffers = {}

    @classmethod
    def from_launch(cls) -> "DataParallel":
        """The world communicator of the running MPI launch."""
        try:
            from mpi4py import MPI
        except ImportError as err:
            raise MissingDependencyError(
                f"this run was started with several MPI ranks, but mpi4py cannot be imported "
                f"({err}): install it with pip install \"tinygpt[mpi]\" (it brings an MPI from "
                "the package index when the system has none)") from None
        return cls(MPI.COMM_WORLD)

    def broadcast_parameters(self, params) -> None:
        """Every rank's parameters become rank 0's."""
        for p in params:
            buffer = np.ascontiguousarray(p.data)   # p.data itself when contiguous
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
            self.comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
            pos = 0
            for p in bucket:
                p.grad = flat[pos:pos + p.grad.size].reshape(p.grad.shape).copy()
                pos += p.grad.size
        return float(self.comm.allreduce(float(loss), op=MPI.SUM))

    def check_same(self, what: str, value) -> None:
        """Refuse to start (on every rank) unless `value` is the same on every rank."""
        digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
        digests = self.comm.allgather(digest)
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            raise InputError(f"ranks {differ} were started with another {what} than rank 0: "
                             "start every rank with the same command, data and files")

    @contextlib.contextmanager
    def guard(self, command: str):
        """An error on this rank prints its message and aborts the whole job (MPI_Abort), so
        no other rank waits for it forever; Ctrl-C and SIGTERM reach every rank from the
        launcher and end each one as in a plain run."""
        try:
            yield
        except KeyboardInterrupt:
            raise
        except BaseException as err:
            message = " ".join(str(err).split()) or type(err).__name__
            print(f"tinygpt {command}: error on rank {self.rank} of {self.size}: {message}; "
                  "ending every rank", file=sys.stderr, flush=True)
            self.comm.Abort(2)
            raise


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

