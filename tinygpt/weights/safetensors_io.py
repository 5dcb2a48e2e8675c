"""Read and write `.safetensors` files (the format of Hugging Face's `model.safetensors`).

The format: 8 bytes little-endian u64 N, then N bytes of JSON, then one byte buffer.
The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
into the buffer), plus an optional "__metadata__" of str -> str.

We parse the header ourselves and refuse a file whose header lies: every tensor's byte count
must equal prod(shape) * itemsize, the tensors must tile the buffer exactly (no overlap, no
hole, nothing past the end of the file) -- the same rules the reference Rust reader enforces.
The tensors are then zero-copy views of one read-only `np.memmap`, so opening the 6.4 GB
gpt2-xl file costs nothing until a tensor is touched.
"""
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from ..errors import InputError

MAX_HEADER_BYTES = 100_000_000  # the reference reader's limit
SYNC_BYTES = 64 << 20           # save_safetensors puts this much on disk at a time

# safetensors dtype tag -> numpy dtype (little-endian). BF16 has no numpy dtype: it is read as
# uint16 and widened to float32 by `bf16_to_float32`.
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
TAGS = {np.dtype(v).str: k for k, v in DTYPES.items() if k != "BF16"}


class SafetensorsError(InputError):
    """A .safetensors file that is malformed or whose header disagrees with its data."""


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32: bfloat16 is the top half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_header(path) -> tuple[dict, dict, int]:
    """Parse and validate the header of `path`. Returns ({name: entry}, metadata, data_start)
    where each entry is {"dtype": np.dtype, "tag": str, "shape": tuple, "begin": int, "end": int}
    with offsets relative to data_start. Raises SafetensorsError naming the first lie found."""
    path = Path(path)
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise SafetensorsError(f"{path}: {file_size} bytes is too short for a safetensors file")
        n = int.from_bytes(prefix, "little")
        if n > MAX_HEADER_BYTES or 8 + n > file_size:
            raise SafetensorsError(f"{path}: header length {n} is impossible for a file of "
                                   f"{file_size} bytes (truncated or not a safetensors file)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not valid UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{path}: __metadata__ must map strings to strings")

    data_size = file_size - 8 - n
    entries = {}
    for name, e in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{where}: entry must have exactly dtype, shape, data_offsets")
        if e["dtype"] not in DTYPES:
            raise SafetensorsError(f"{where}: unsupported dtype {e['dtype']!r}")
        shape, offsets = e["shape"], e["data_offsets"]
        if not (isinstance(shape, list) and all(_is_count(d) for d in shape)):
            raise SafetensorsError(f"{where}: shape {shape!r} is not a list of non-negative ints")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
            raise SafetensorsError(f"{where}: data_offsets {offsets!r} is not [begin, end]")
        begin, end = offsets
        dtype = DTYPES[e["dtype"]]
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if end < begin or end - begin != nbytes:
            raise SafetensorsError(f"{where}: data_offsets {offsets} span {end - begin} bytes but "
                                   f"{e['dtype']} {tuple(shape)} needs {nbytes}")
        if end > data_size:
            raise SafetensorsError(f"{where}: data_offsets {offsets} run past the end of the data "
                                   f"({data_size} bytes; the file is truncated or the header lies)")
        entries[name] = {"dtype": dtype, "tag": e["dtype"], "shape": tuple(shape),
                         "begin": begin, "end": end}

    # The tensors must tile [0, data_size) exactly: sorted by offset, each starts where the
    # previous one ended. This rules out overlapping tensors and unexplained bytes.
    pos = 0
    for name, e in sorted(entries.items(), key=lambda kv: (kv[1]["begin"], kv[1]["end"])):
        if e["begin"] != pos:
            what = "overlaps the previous tensor" if e["begin"] < pos else f"leaves a hole at byte {pos}"
            raise SafetensorsError(f"{path}: tensor {name!r} at data_offsets "
                                   f"[{e['begin']}, {e['end']}] {what}")
        pos = e["end"]
    if pos != data_size:
        raise SafetensorsError(f"{path}: header describes {pos} data bytes but the file holds "
                               f"{data_size} (trailing bytes the header does not explain)")
    return entries, metadata, 8 + n


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def load_safetensors(path, widen_bf16: bool = True) -> dict:
    """{name: ndarray} for every tensor in `path`, as read-only views of one memory map (in
    file order). BF16 tensors are widened to float32 copies unless `widen_bf16=False`."""
    entries, _, start = read_header(path)
    if not entries:
        return {}
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, e in entries.items():
        if e["begin"] == e["end"]:  # a tensor with a zero-size dimension
            arr = np.zeros(e["shape"], e["dtype"])
        else:
            arr = np.ndarray(e["shape"], e["dtype"], buffer=mm, offset=start + e["begin"])
        out[name] = bf16_to_float32(arr) if e["tag"] == "BF16" and widen_bf16 else arr
    return out


def save_safetensors(tensors: dict, path, metadata: dict | None = None) -> Path:
    """Write {name: ndarray} to `path` in safetensors format, atomically and durably: the bytes go
    to a temporary file in the same directory, which is synced to disk and renamed over `path`
    only when complete. Tensors are laid out in name order; the header is padded with spaces to a
    multiple of 8 so the data starts aligned (as the reference writer does). Arrays may be
    non-contiguous views: each is made contiguous only while it is written.

    The file goes to disk in steps of `SYNC_BYTES`, each dropped from the page cache once written
    (`_sync_and_drop`), so a 1.5 GB training checkpoint never holds more than that much cache."""
    path = Path(path)
    names, header, offset = sorted(tensors), {}, 0
    for name in names:  # the header first, from shapes and dtypes alone
        arr = tensors[name]
        tag = TAGS.get(np.dtype(arr.dtype).newbyteorder("<").str)
        if tag is None:
            raise TypeError(f"tensor {name!r}: dtype {arr.dtype} cannot be stored in safetensors")
        nbytes = int(np.prod(arr.shape, dtype=np.int64)) * DTYPES[tag].itemsize
        header[name] = {"dtype": tag, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            unsynced = 0
            for name in names:  # one contiguous little-endian copy at a time, if needed
                arr = np.asarray(tensors[name], dtype=DTYPES[header[name]["dtype"]], order="C")
                data = arr.reshape(-1).view(np.uint8)
                for start in range(0, data.size, SYNC_BYTES):
                    chunk = data[start:start + SYNC_BYTES]
                    f.write(chunk)
                    unsynced += chunk.size
                    if unsynced >= SYNC_BYTES:
                        _sync_and_drop(f)
                        unsynced = 0
            _sync_and_drop(f)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a saved model is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _sync_and_drop(f) -> None:
    """Put everything written to `f` on disk, then let the OS drop it from the page cache.

    Why: written pages otherwise stay cached (dirty, then clean) until memory runs short, so
    saving a checkpoint claims as much fresh memory as the file is large. On the project's VMs
    fresh memory is what costs (the host hands the guest back pages it reported free): one 1.5 GB
    write took 9.5-9.9 s there, 8.7-9.0 s of it in the kernel; in 64 MB steps, synced and dropped,
    0.9 s (2026-12-05). Clean pages can be dropped, dirty ones not: hence the sync first."""
    f.flush()
    getattr(os, "fdatasync", os.fsync)(f.fileno())
    if hasattr(os, "posix_fadvise"):  # Linux and most Unixes; macOS and Windows keep the cache
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
