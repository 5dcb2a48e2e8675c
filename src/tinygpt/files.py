"""Reading a user's file with a bound, and writing a file so that readers see either the old file
or the complete new one, never half.

`read_bytes(path, what)` and `read_text(path, what)` are how tinygpt reads a file a user names
(a text to train on, a data set): a folder, a missing file, a file over `MAX_TEXT_BYTES`, or a
device or pipe that never ends (`/dev/zero`) is refused with an InputError naming `what` and the
path, instead of reading until memory runs out.

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
import stat
from pathlib import Path

from .errors import InputError, MissingFileError

_TMP_SUFFIX = ".tmp"
MAX_TEXT_BYTES = 256 << 20  # 256 MiB: some 64M GPT-2 tokens, days of training on a CPU


def read_bytes(path, what: str = "file", limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of the file `path`, at most `limit` of them; `what` names its role in errors."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory; give a file")
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > limit:
                raise InputError(f"{what} {path} is {info.st_size:,} bytes, more than the "
                                 f"{limit:,} tinygpt reads")
            data = f.read() if stat.S_ISREG(info.st_mode) else _read_at_most(f, limit + 1)
    except FileNotFoundError:
        raise MissingFileError(f"{what} {path} does not exist") from None
    if len(data) > limit:
        raise InputError(f"{what} {path} is not a regular file and gave more than {limit:,} bytes "
                         "without ending; give a file")
    return data


def _read_at_most(f, n: int) -> bytes:
    """Up to `n` bytes of a stream that may never end, a megabyte at a time."""
    chunks, size = [], 0
    while size < n and (chunk := f.read(min(1 << 20, n - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_text(path, what: str = "text file", limit: int = MAX_TEXT_BYTES) -> str:
    """The text of `path` decoded as UTF-8 (a byte-order mark is dropped), read as `read_bytes`
    reads it; bytes that are not UTF-8 are reported by offset and line."""
    raw = read_bytes(path, what, limit)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InputError(f"{what} {path} is not UTF-8 text: byte {e.start} (line {line}) is "
                         f"{raw[e.start:e.start + 1]!r} ({e.reason}); save it as UTF-8") from None


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
    for tmp in path.parent.iterdir():  # never glob: a name may hold glob characters ("out[1]")
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
        raise InputError(f"atomic_write opens files for writing ('w' modes), not {mode!r}")
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
