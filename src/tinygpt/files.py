"""Writing a file so that readers see either the old file or the complete new one, never half.

`atomic_write(path)` is the one place tinygpt writes an output file (checkpoints, weights, plots,
CSV and JSON): bytes go to a temporary file beside `path`, which is synced to disk and renamed
over `path` only once complete. The temporary file is created with mode 0o666 filtered by the
process's umask, exactly as a plain `open(path, "w")` would make it, so outputs are not private
to their owner. Temporary names carry the writer's process id (`.NAME.PID-RANDOM.tmp`); one whose
process is gone is a leftover of a write that was killed, and `remove_stale_temps(path)` (run
before every write, and by loaders) deletes it."""
import contextlib
import os
import secrets
from pathlib import Path

_TMP_SUFFIX = ".tmp"


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{_TMP_SUFFIX}")


def _writer_pid(tmp: Path, path: Path):
    """The process id in a temporary name of `path`, or None if `tmp` is not one."""
    prefix = f".{path.name}."
    name = tmp.name
    if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX)):
        return None
    pid, _, rand = name[len(prefix):-len(_TMP_SUFFIX)].partition("-")
    return int(pid) if pid.isdigit() and rand else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def stale_temps(path) -> list:
    """Temporary files of `path` left by writers that no longer run."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    found = []
    for tmp in path.parent.glob(f".{path.name}.*{_TMP_SUFFIX}"):
        pid = _writer_pid(tmp, path)
        if pid is not None and not _alive(pid):
            found.append(tmp)
    return found


def remove_stale_temps(path) -> list:
    """Delete the temporary files a killed write of `path` left behind; returns their paths."""
    removed = []
    for tmp in stale_temps(path):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", encoding: str = None, sync: bool = True):
    """Open a temporary file beside `path` for writing; on a clean exit sync it (`sync`) and
    rename it over `path`; on any exception (KeyboardInterrupt included) delete it.

        with atomic_write("runs/out.json", "w", encoding="utf-8") as f:
            json.dump(obj, f)
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write opens files for writing ('w' modes), not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
