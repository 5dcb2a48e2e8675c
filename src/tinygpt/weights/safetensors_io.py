"""Read and write `.safetensors` files (the format of Hugging Face's `model.safetensors`).

The format: 8 bytes little-endian u64 N, then N bytes of JSON, then one byte buffer.
The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
into the buffer), plus an optional "__metadata__" of str -> str.

We parse the header ourselves and refuse a file whose header lies: every tensor's byte count
must equal prod(shape) * itemsize, the tensors must tile the buffer exactly (no overlap, no
hole, nothing past the end of the file) -- the same rules the reference Rust reader enforces.
The tensors are then zero-copy views of one read-only `np.memmap`, so opening the 6.4 GB
gpt2-xl file costs nothing until a tensor is touched. A crafted header (brackets nested 100,000
deep, a 5,000-digit number, 65 dimensions, shapes no array can have) is a SafetensorsError
naming the file and the tensor, never a RecursionError or a MemoryError.
"""
import json
from pathlib import Path

import numpy as np
from ..errors import InputError, InputTypeError
from ..files import atomic_write

MAX_HEADER_BYTES = 100_000_000  # the reference reader's limit
MAX_NDIM = 64                   # numpy's limit on an array's dimensions

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
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, a huge number, deep nesting
        raise SafetensorsError(f"{path}: header is not valid UTF-8 JSON "
                               f"({type(e).__name__}: {str(e)[:200]})") from None
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
            raise SafetensorsError(f"{where}: shape {str(shape)[:100]} is not a list of "
                                   f"non-negative ints")
        if len(shape) > MAX_NDIM or _elements(shape, skip_zeros=True) * DTYPES[e["dtype"]].itemsize \
                > np.iinfo(np.intp).max:
            raise SafetensorsError(f"{where}: shape {str(shape)[:100]} is larger than any array "
                                   f"can be ({len(shape)} dimensions)")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
            raise SafetensorsError(f"{where}: data_offsets {offsets!r} is not [begin, end]")
        begin, end = offsets
        dtype = DTYPES[e["dtype"]]
        nbytes = _elements(shape) * dtype.itemsize
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


def _elements(shape, skip_zeros=False) -> int:
    """The number of elements of `shape` (exact: Python ints do not overflow); with `skip_zeros`,
    the product of the non-zero dimensions, which numpy must still be able to represent."""
    count = 1
    for d in shape:
        count *= d if d or not skip_zeros else 1
    return count


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


def save_safetensors(tensors: dict, path, metadata: dict | None = None, bf16=()) -> Path:
    """Write {name: ndarray} to `path` in safetensors format, atomically and durably
    (`tinygpt.files.atomic_write`: a temporary file beside `path`, synced, then renamed over it).
    The names in `bf16` are uint16 arrays of bfloat16 bits, written as BF16.
    Tensors are laid out in name order; the header is padded with spaces to a multiple of 8 so
    the data starts aligned (as the reference writer does). Arrays may be non-contiguous views:
    each is made contiguous only while it is written."""
    path = Path(path)
    names, header, offset = sorted(tensors), {}, 0
    for name in names:  # the header first, from shapes and dtypes alone
        arr = tensors[name]
        tag = TAGS.get(np.dtype(arr.dtype).newbyteorder("<").str)
        if name in bf16:
            tag = "BF16" if np.dtype(arr.dtype).newbyteorder("<").str == "<u2" else None
        if tag is None:
            raise InputTypeError(f"tensor {name!r}: dtype {arr.dtype} cannot be stored in safetensors")
        nbytes = int(np.prod(arr.shape, dtype=np.int64)) * DTYPES[tag].itemsize
        header[name] = {"dtype": tag, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)

    with atomic_write(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name in names:
            f.write(_tensor_bytes(tensors[name], DTYPES[header[name]["dtype"]]))
    return path


def _tensor_bytes(arr, dtype: np.dtype) -> np.ndarray:
    """One tensor's bytes as written: little-endian, C order (a copy only if `arr` is not)."""
    return np.asarray(arr, dtype=dtype, order="C").reshape(-1).view(np.uint8)
