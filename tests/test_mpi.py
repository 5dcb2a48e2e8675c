"""Data parallelism over MPI (tinygpt.distributed): `mpiexec -n 2` with global batch 4 trains the
same weights as one process with batch 4 (dropout on), resumes exactly, refuses ranks started
differently, and a killed rank ends the job in bounded time with the checkpoint intact.
Every job is started and ended here: its process group is killed in a `finally`."""
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinygpt.cli import main
from tinygpt.data import shards
from tinygpt.errors import MissingDependencyError
from tinygpt.train import read_checkpoint

pytest.importorskip("mpi4py", reason="the [mpi] extra (mpi4py) is not installed")
MPIEXEC = shutil.which("mpiexec") or shutil.which("mpiexec", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on PATH")

CFG = {"vocab_size": 50257, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
       "drop_rate": 0.2, "qkv_bias": False}
WORDS = ["every", "Effort", "moves", "you", "the", "Gisburn", "picture,", "said", "I", "12"]


def mpi_version() -> str:
    return subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True, timeout=60).stdout


def launcher(n):
    """mpiexec -n N, with Open MPI's flags for running as root on few cores when it is Open MPI."""
    extra = ["--oversubscribe", "--allow-run-as-root"] if "Open MPI" in mpi_version() else []
    return [MPIEXEC, *extra, "-n", str(n)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mpi")
    rng = random.Random(4)
    text = "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))) + "x\n"
                   for _ in range(400))
    (folder / "book.txt").write_text(text, encoding="ascii")
    shards.prepare_data([folder / "book.txt"], folder / "data", jobs=1, progress=False)
    (folder / "cfg.json").write_text(json.dumps(CFG))
    return folder


def pretrain_args(folder, out, *more):
    return ["pretrain", "--data", str(folder / "data"), "--config", str(folder / "cfg.json"),
            "--batch-size", "4", "--eval-freq", "2", "--eval-iter", "1", "--start-context", "",
            "--seed", "7", "--out", str(out), "--quiet", *more]


@contextlib.contextmanager
def job(command, **kwargs):
    """A launched job in its own process group, killed whole however the test ends."""
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def run_job(command, timeout=120):
    with job(command) as proc:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err


def tinygpt(*args):
    return [sys.executable, "-m", "tinygpt", *args]


def weights(path):
    model_sd, _, state = read_checkpoint(path, optimizer=False)
    return {k: np.array(v) for k, v in model_sd.items()}, state


def assert_close(a, b, exact=False):
    for name in a:
        if exact:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        else:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=2e-6, err_msg=name)


def test_two_ranks_train_what_one_rank_trains_and_resume_exactly(run_dir):
    one, two, resumed = run_dir / "one", run_dir / "two", run_dir / "resumed"
    assert main(pretrain_args(run_dir, one, "--max-steps", "4")) == 0
    code, out, err = run_job(launcher(2) + tinygpt(*pretrain_args(run_dir, two, "--max-steps", "4")))
    assert code == 0, err
    assert out.count("checkpoint:") == 1   # rank 0 alone reports (and writes)
    single, state_single = weights(one / "model.safetensors")
    parallel, state_parallel = weights(two / "model.safetensors")
    assert_close(parallel, single)
    for history in ("train_losses", "val_losses"):   # evaluation split over the ranks, too
        np.testing.assert_allclose(state_parallel["loop"][history], state_single["loop"][history],
                                   rtol=1e-5, err_msg=history)
    # 2 steps, then resumed under 2 ranks up to 4: the uninterrupted 2-rank run, bit for bit
    code, _, err = run_job(launcher(2) + tinygpt(*pretrain_args(run_dir, resumed, "--max-steps", "2")))
    assert code == 0, err
    ckpt = resumed / "model.safetensors"
    code, out, err = run_job(launcher(2) + tinygpt("pretrain", "--data", str(run_dir / "data"),
                                                   "--resume", str(ckpt), "--max-steps", "4",
                                                   "--start-context", "", "--out", str(resumed),
                                                   "--quiet"))
    assert code == 0, err
    assert out.count("resuming") == 1   # rank 0 alone prints
    assert_close(weights(ckpt)[0], parallel, exact=True)


def test_ranks_started_differently_are_refused(run_dir):
    command = launcher(1) + tinygpt(*pretrain_args(run_dir, run_dir / "x", "--max-steps", "1"))
    other = tinygpt(*pretrain_args(run_dir, run_dir / "x", "--max-steps", "2"))
    code, _, err = run_job(command + [":", "-n", "1"] + other)
    assert code != 0
    assert "ranks [1] were started with another command line or data than rank 0" in err


def test_batch_not_split_evenly_is_refused(run_dir):
    code, _, err = run_job(launcher(2) + tinygpt(*pretrain_args(run_dir, run_dir / "y", "--max-steps",
                                                                "1", "--batch-size", "3")))
    assert code != 0 and "the batch size 3 cannot be split evenly over 2 ranks" in err


@pytest.mark.parametrize("launcher_ends_it", [True, False], ids=["launcher", "survivor"])
def test_a_killed_rank_ends_the_job_and_leaves_a_loadable_checkpoint(run_dir, launcher_ends_it):
    """Killed rank 1 ends the job: MPICH's launcher ends it by default; when the launcher does
    not (its clean-up off, and each rank run by a shell, so that what the launcher sees is a
    process that exits, not one killed by a signal, which Hydra 5 ends the job on regardless),
    rank 0 itself gives up waiting after --rank-timeout and aborts the job."""
    if not launcher_ends_it and "HYDRA" not in mpi_version():
        pytest.skip("needs MPICH's Hydra (mpiexec -disable-auto-cleanup)")
    out = run_dir / f"killed-{launcher_ends_it}"
    mpiexec = launcher(2) if launcher_ends_it else [MPIEXEC, "-disable-auto-cleanup", "-n", "2",
                                                    "sh", "-c", '"$@"; exit $?', "sh"]
    command = mpiexec + tinygpt(*pretrain_args(run_dir, out, "--max-steps", "100000", "--epochs",
                                               "1000", "--checkpoint-every", "1", "--rank-timeout", "10"))
    with job(command) as proc:
        deadline = time.monotonic() + 90
        while not (out / "model.safetensors").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.2)
        rank1 = rank_pid(proc.pid, 1)
        os.kill(rank1, signal.SIGKILL)
        killed = time.monotonic()
        out_text, err = proc.communicate(timeout=60)   # bounded
        assert time.monotonic() - killed < 60
    assert proc.returncode != 0
    if launcher_ends_it:
        assert "signal 9" in (out_text + err).lower(), (out_text, err)   # the launcher names the kill
    else:
        lines = [line for line in err.splitlines() if "error on rank 0 of 2" in line]
        assert len(lines) == 1 and "waited" in lines[0] and "a rank has died or hangs" in lines[0], \
            (proc.returncode, out_text, err)
    _, state = weights(out / "model.safetensors")
    assert state["loop"]["global_step"] >= 0


def rank_pid(root, rank) -> int:
    """The pid of MPI rank `rank` among the descendants of process `root` (from /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, found = [root], []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    for pid in found:
        with contextlib.suppress(OSError):
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            python = cmd.startswith(sys.executable.encode() + b"\0-m\0tinygpt")   # not a shell
            if python and (f"PMI_RANK={rank}".encode() in env
                       or f"OMPI_COMM_WORLD_RANK={rank}".encode() in env):
                return pid
    raise AssertionError(f"no rank {rank} under process {root}")


def test_a_multi_rank_launch_without_mpi4py_says_how_to_get_it(monkeypatch):
    from tinygpt.cli.pretrain import launched_ranks
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "tinygpt\[mpi\]"'):
        launched_ranks()
    monkeypatch.setenv("PMI_SIZE", "1")
    assert launched_ranks() is None


def test_importing_tinygpt_loads_no_mpi():
    script = ("import sys, tinygpt, tinygpt.cli, tinygpt.train.pretrain, tinygpt.data.shards\n"
              "from tinygpt.cli import _register_commands\n_register_commands()\n"
              "print(sorted(m for m in sys.modules if m.startswith(('mpi4py', 'tinygpt.distributed'))))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_watchdog_ends_only_a_wait_longer_than_the_timeout():
    from tinygpt.distributed import RankLostError, _Watchdog

    class Ranks:   # what the watchdog calls: abort() (MPI_Abort in DataParallel)
        aborted = []

        def abort(self, err):
            self.aborted.append(err)
    ranks = Ranks()
    watchdog = _Watchdog(ranks, timeout=1.0)
    for _ in range(3):   # waits shorter than the timeout, one after another
        with watchdog.waiting("a short exchange"):
            time.sleep(0.2)
    time.sleep(1.2)   # and no wait at all
    assert ranks.aborted == []
    with watchdog.waiting("the gradient all-reduce"):
        deadline = time.monotonic() + 5
        while not ranks.aborted and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(ranks.aborted) == 1 and isinstance(ranks.aborted[0], RankLostError)
    assert "for the other ranks in the gradient all-reduce: a rank has died" in str(ranks.aborted[0])
    with pytest.raises(ValueError, match="positive number of seconds"):
        _Watchdog(ranks, timeout=0)
