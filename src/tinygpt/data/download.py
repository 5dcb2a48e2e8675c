"""Checksummed, resumable downloads (weights and datasets share them).

`download_file(url, dest, sha256=None, size=None)` streams into `dest + ".part"` with a tqdm bar,
resumes an existing .part with an HTTP Range request, verifies size and sha256, and only then
renames the .part to `dest` (atomic on one filesystem). So a file at `dest` has always passed
verification; a corrupt download is deleted, never used. Standard library + tqdm only.
Downloads land under `cache_home()`: `$TINYGPT_HOME`, default `~/.cache/tinygpt`.

Nothing past the expected size is written: a server announcing another length is refused before
the body is read, and one sending more than it announced is cut off at the expected size (or at
`max_bytes` when no size is known). The .part file is kept for a resume, so it is written in
place rather than through `tinygpt.files.atomic_write` (which deletes its file on any error).
"""
import hashlib
import os
import re
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

from tqdm.auto import tqdm
from ..errors import TinyGPTError

CHUNK = 1 << 20


class DownloadError(TinyGPTError, OSError):
    """A download that could not complete or did not verify; the message says what was tried."""


class ChecksumError(DownloadError):
    """The downloaded bytes are not the expected file (the file was deleted)."""


class _Interrupted(Exception):
    """The connection broke mid-body: the .part file is kept and can be resumed."""


def cache_home() -> Path:
    return Path(os.environ.get("TINYGPT_HOME") or Path.home() / ".cache" / "tinygpt").expanduser()


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download_file(url: str, dest, sha256: str = None, size: int = None, *, progress: bool = True,
                  timeout: float = 30.0, retries: int = 3, validate=None, desc: str = None,
                  max_bytes: int = None, force: bool = False) -> Path:
    """Download `url` to `dest` unless `dest` already exists (with the expected size, if known)
    and `force` is false (with `force`, the existing file is replaced once the new one verifies).

    Bytes go to `dest.part`; an existing .part is resumed with `Range: bytes=<n>-`. A connection
    cut mid-body is resumed up to `retries` times, then DownloadError says where the partial file
    is (run again to resume). At most `size` bytes are written (else at most `max_bytes`, if
    given): a server that announces or sends more is refused with ChecksumError. When complete:
    size, sha256 and `validate(path)` (a callable that raises on bad content) are checked; on
    failure the file is deleted and ChecksumError raised; on success it is renamed to `dest`.
    Returns `dest` as a Path."""
    dest = Path(dest)
    if dest.exists() and not force:
        if size is None or dest.stat().st_size == size:
            return dest
        dest.unlink()  # not the file we want (truncated by hand, or an older version)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    limit = size if size is not None else max_bytes
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, size, limit, progress, timeout, desc or dest.name)
            break
        except _Interrupted as e:
            if attempt == retries:
                have = part.stat().st_size if part.exists() else 0
                raise DownloadError(f"download of {url} was interrupted ({e}); the partial file "
                                    f"{part} ({have:,} bytes) is kept: run again to resume") from None
            time.sleep(min(0.5 * 2 ** attempt, 8.0))
    _verify(url, part, sha256, size, validate)
    os.replace(part, dest)
    return dest


def _fetch(url, part: Path, size, limit, progress, timeout, desc) -> None:
    """Append the rest of `url` to `part`; never let `part` grow past `limit` bytes."""
    have = part.stat().st_size if part.exists() else 0
    if limit is not None and have > limit:
        part.unlink()
        have = 0
    if size is not None and have == size:
        return  # complete from an earlier run; only verification is left
    headers = {"User-Agent": "tinygpt", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            return  # nothing left to send: the .part is complete (verification decides)
        raise DownloadError(f"{url} answered HTTP {e.code} {e.reason}{_kept(part)}") from None
    except (urllib.error.URLError, OSError, HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"could not download {url}: {reason} (offline, or the server is "
                            f"down?){_kept(part)}") from None
    with resp:
        mode = "wb"
        if have and resp.status == 206:
            m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                part.unlink()
                raise _Interrupted(f"server resumed at the wrong offset "
                                   f"({resp.headers.get('Content-Range')!r} for {have})")
            mode = "ab"
        else:
            have = 0  # a plain 200: the server sends the whole file again
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        total = have + length if length is not None else size
        if total is not None and (total != size if size is not None else
                                  limit is not None and total > limit):
            part.unlink(missing_ok=True)
            expected = f"{size:,} bytes" if size is not None else f"at most {limit:,} bytes"
            raise ChecksumError(f"{url} announces {total:,} bytes, expected {expected}: not the "
                                f"file wanted, so nothing was downloaded")
        got = _stream(resp, part, mode, limit - have if limit is not None else None,
                      tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                           desc=desc, disable=not progress, leave=False))
        if got is None:  # more bytes than the limit: stopped there
            part.unlink(missing_ok=True)
            raise ChecksumError(f"{url} sent more than the expected {limit:,} bytes; the download "
                                f"was stopped there and deleted")
    if length is not None and got < length:  # http.client does not raise for a short body
        raise _Interrupted(f"connection closed after {have + got:,} of {have + length:,} bytes")


def _stream(resp, part: Path, mode: str, room, bar):
    """Copy the body of `resp` into `part`, at most `room` bytes (None: no limit). Returns the
    number of bytes written, or None if the server had more than `room` to send."""
    got = 0
    with open(part, mode) as f, bar:
        while room is None or got < room:
            try:
                chunk = resp.read(CHUNK if room is None else min(CHUNK, room - got))
            except (OSError, HTTPException) as e:  # reset, timeout, IncompleteRead
                raise _Interrupted(f"{type(e).__name__}: {e}") from None
            if not chunk:
                return got
            f.write(chunk)
            got += len(chunk)
            bar.update(len(chunk))
    try:
        extra = resp.read(1)  # one byte only, to tell "exactly the limit" from "more"
    except (OSError, HTTPException):
        extra = b""
    return None if extra else got


def _kept(part: Path) -> str:
    if part.exists():
        return f"; the partial file {part} ({part.stat().st_size:,} bytes) is kept for a resume"
    return ""


def _verify(url, part: Path, sha256, size, validate) -> None:
    """Check the finished .part; delete it and raise ChecksumError if it is not the file."""
    problem = None
    actual = part.stat().st_size
    if size is not None and actual != size:
        problem = f"has {actual:,} bytes, expected {size:,}"
    elif sha256 is not None and (digest := sha256_file(part)) != sha256.lower():
        problem = f"has sha256 {digest}, expected {sha256.lower()}"
    elif validate is not None:
        try:
            validate(part)
        except Exception as e:
            problem = f"is not valid: {e}"
    if problem:
        part.unlink()
        raise ChecksumError(f"the file downloaded from {url} {problem}; the corrupt file {part} "
                            f"was deleted. Try again; if it fails again the file on the server "
                            f"differs from the one recorded.")

