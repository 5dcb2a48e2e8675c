"""Read a PyTorch `.pth`/`.pt`/`.bin` state dict as NumPy arrays, without importing torch.

`torch.save` (PyTorch >= 1.6) writes a zip archive:

    <archive>/data.pkl      a pickle of the object (e.g. an OrderedDict of tensors)
    <archive>/data/<key>    the raw little-endian bytes of each storage
    <archive>/byteorder     "little" or "big" (absent in older files: little)

In data.pkl a tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
and each storage is a *persistent id* ("storage", torch.FloatStorage, key, location, numel)
pointing at data/<key>. We unpickle with `find_class` restricted to the handful of globals a
state dict needs; any other global (`os.system`, `builtins.eval`, a user class, ...) is refused
before it is resolved, so nothing in the file runs. Tensors become read-only NumPy views into
their storage, as torch shares storage between views (bfloat16 storages are widened to float32).

Crafted files are refused before they cost memory: a pickle storing into a memo slot past its
own length, a compressed record inflating past MAX_INFLATED_BYTES, a tensor reaching outside its
storage, or one whose elements overlap (stride 0); every refusal is a TorchFileError naming the
file and the record or tensor.
"""
import _compat_pickle
import collections
import io
import pickle
import pickletools
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .safetensors_io import bf16_to_float32
from ..errors import InputError, TinyGPTError

# Records are read whole. torch.save stores them uncompressed, so a stored record is never larger
# than the file; a compressed one (a re-zipped file) may inflate to at most this much in all, so a
# small zip bomb is refused before it expands (tests/test_crafted_files.py checks the memory).
MAX_INFLATED_BYTES = 64 << 20
# What zipfile raises for a damaged archive: a bad CRC or header (BadZipFile), a corrupt deflate
# stream (zlib.error), an unsupported compression method (NotImplementedError), an encrypted record
# (RuntimeError), all tested in tests/test_crafted_files.py; and a record whose data runs past the
# end of the file (EOFError), which the size check in _Records refuses first for a stored record
# and which is caught here too so that no other path shows a bare EOFError.
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)


class UnsafePickleError(TinyGPTError, pickle.UnpicklingError):
    """The pickle asked for something a state dict never contains."""


class TorchFileError(InputError, pickle.UnpicklingError):
    """A file that is not a well-formed torch.save archive: a corrupt zip, a missing or oversized
    record, a tensor outside its storage or whose elements overlap."""


# torch storage class -> numpy dtype of its elements ("bfloat16" is read as uint16 bits).
STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "bfloat16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}


class _StorageType:
    """Stands in for `torch.FloatStorage` & co.: only its element dtype matters."""

    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGE_DTYPES[name]

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """A loaded storage: a flat read-only array of its elements (bfloat16 already widened to
    float32, once per storage) and the record it came from."""

    def __init__(self, array: np.ndarray, record: str):
        self.array, self.record = array, record


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _overlaps(size: tuple, stride: tuple) -> bool:
    """True if two different indices of a (size, stride) tensor can reach the same element.
    Sufficient test for no overlap: taking the dims of size > 1 by increasing stride, each stride
    steps past everything the smaller ones span (what contiguous tensors, transposes and slices do)."""
    span = 0
    for n, s in sorted(((n, s) for n, s in zip(size, stride) if n > 1), key=lambda d: d[1]):
        if s <= span:
            return True
        span += (n - 1) * s
    return False


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """A tensor as a read-only NumPy view into its storage, never a copy: tensors that share a
    storage (tied weights, views) share memory as they do in torch, and however many tensors the
    pickle makes, memory stays the size of the storages."""
    if not isinstance(storage, _Storage):
        raise UnsafePickleError(f"_rebuild_tensor_v2 expects a storage, got {type(storage).__name__}")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and _is_int(storage_offset)
            and all(map(_is_int, size + stride))):
        raise TorchFileError(f"storage {storage.record}: tensor size {size!r}, stride {stride!r} "
                             f"and offset {storage_offset!r} must be integers")
    flat, offset = storage.array, storage_offset
    where = f"a tensor of size {size}, stride {stride} at offset {offset} in storage {storage.record}"
    if len(size) != len(stride) or len(size) > 64 or offset < 0 or min(size + stride, default=0) < 0:
        raise TorchFileError(f"{where} has an impossible geometry")
    if not all(size):  # empty: nothing to read, but numpy must be able to hold the shape
        if int(np.prod([max(n, 1) for n in size], dtype=object)) * flat.itemsize > np.iinfo(np.intp).max:
            raise TorchFileError(f"{where} has a shape too large to represent")
        empty = np.zeros(size, flat.dtype)
        empty.flags.writeable = False  # read-only like every other tensor loaded here
        return empty
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise TorchFileError(f"{where} reads element {last} of a storage of {flat.size}")
    strides = [s * flat.itemsize if n > 1 else 0 for n, s in zip(size, stride)]  # any, for n = 1
    return np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=strides,
                                           writeable=False)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data  # an nn.Parameter is just its data here


# The only globals we resolve: (module, name) -> what the pickle gets instead.
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType for name in STORAGE_DTYPES},
}


def _fresh(module: str, name: str):
    """A new stand-in per lookup, so a pickle's BUILD opcode (which may set attributes on any
    object it holds) can only touch throwaway objects, never this module's functions."""
    target = ALLOWED_GLOBALS[(module, name)]
    if target is _StorageType:
        return _StorageType(name)
    if target is collections.OrderedDict:  # a builtin type: its attributes are read-only
        return target
    return lambda *args, **kwargs: target(*args, **kwargs)


def _check_memo_indices(data: bytes, source: str) -> None:
    """Refuse a pickle that stores into a memo slot beyond its own length, before unpickling.
    Why: the C unpickler keeps its memo in an array as long as the largest index, so a 10-byte
    pickle asking for slot 2**27 would make it allocate 2 GB (tests/test_crafted_files.py)."""
    try:
        for opcode, arg, pos in pickletools.genops(data):
            if opcode.name in ("BINPUT", "LONG_BINPUT", "PUT") and int(arg) > len(data):
                raise TorchFileError(f"{source}: data.pkl stores into memo slot {arg} at byte {pos}, "
                                     f"beyond what a pickle of {len(data)} bytes can fill")
    except TorchFileError:
        raise
    except Exception as e:  # genops raises ValueError & co. for a truncated or unknown opcode
        raise TorchFileError(f"{source}: data.pkl is not a valid pickle ({e})") from None
class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, read_record, byteorder: str, source: str):
        super().__init__(io.BytesIO(data))
        self._read_record, self._byteorder, self._source = read_record, byteorder, source
        self._storages = {}  # key -> _Storage; tensors that are views share one storage

    def find_class(self, module, name):
        # protocol-2 pickles spell Python 3 names the Python 2 way (__builtin__.eval): translate
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _fresh(module, name)
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {self._source}: its pickle asks for the global "
                f"'{module}.{name}', which a state dict of tensors never needs (only tensors, "
                f"OrderedDict and plain Python containers are allowed). Nothing was executed. "
                f"If you trust the file, convert it with torch itself.") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and _is_int(pid[4]) and pid[4] >= 0):
            raise UnsafePickleError(f"refusing to load {self._source}: unknown persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        key = str(key)
        if key not in self._storages:
            bf16 = storage_type.dtype == "bfloat16"
            dtype = np.dtype("u2" if bf16 else storage_type.dtype)
            dtype = dtype.newbyteorder("<" if self._byteorder == "little" else ">")
            record, raw = self._read_record(key)
            if len(raw) < numel * dtype.itemsize:
                raise TorchFileError(f"{self._source}: storage record {record} holds {len(raw)} "
                                     f"bytes, the pickle needs {numel} x {dtype.itemsize}")
            arr = np.frombuffer(raw, dtype=dtype, count=numel)
            arr = arr.astype(dtype.newbyteorder("="), copy=False)
            self._storages[key] = _Storage(bf16_to_float32(arr) if bf16 else arr, record)
            self._storages[key].array.flags.writeable = False
        return self._storages[key]


class _Records:
    """Reads the records of a torch.save zip, keeping what compressed records inflate to within
    MAX_INFLATED_BYTES and refusing a stored record the file cannot hold."""

    def __init__(self, zf: zipfile.ZipFile, path: Path):
        self.zf, self.path, self.file_size, self.inflated = zf, path, path.stat().st_size, 0

    def read(self, name: str) -> bytes:
        info = self.zf.getinfo(name)
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size > self.file_size:
                raise TorchFileError(f"{self.path}: record {name} claims {info.file_size:,} bytes "
                                     f"in a file of {self.file_size:,}")
        else:
            self.inflated += info.file_size
            if self.inflated > MAX_INFLATED_BYTES:
                raise TorchFileError(
                    f"{self.path}: record {name} is compressed and would inflate the records read "
                    f"to {self.inflated:,} bytes, past the limit of {MAX_INFLATED_BYTES:,} "
                    f"(torch.save stores records uncompressed; this looks like a zip bomb)")
        try:
            return self.zf.read(name)
        except ZIP_ERRORS as e:
            raise TorchFileError(f"{self.path} is a damaged zip archive: record {name} cannot be "
                                 f"read ({type(e).__name__}: {e})") from None


def _tensors(obj):
    """(name, array) for every array in a loaded object, named by its keys and indices (the first
    path that reaches it). Walked with a stack and each container once: a crafted pickle may nest
    lists 100,000 deep, share one list at every level (2**100 paths) or hold itself."""
    stack, seen = [("", obj)], set()
    while stack:
        where, obj = stack.pop()
        if isinstance(obj, np.ndarray):
            yield where or "<the object>", obj
        elif isinstance(obj, (dict, list, tuple)) and id(obj) not in seen:
            seen.add(id(obj))
            if isinstance(obj, dict):
                stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in obj.items())
            else:
                stack.extend((f"{where}[{i}]", v) for i, v in enumerate(obj))


def _refuse_overlapping(obj, source: str) -> None:
    """Tensors are views, so an expanded one (stride 0) costs nothing here, but whoever uses it
    would copy it: a 509-byte file can describe a 30000 x 30000 tensor. State dicts never hold
    one, so it is refused, by name."""
    for name, arr in _tensors(obj):
        stride = tuple(s // arr.itemsize for s in arr.strides)
        if arr.size and _overlaps(arr.shape, stride):
            raise TorchFileError(f"{source}: tensor {name!r} of size {arr.shape} has stride "
                                 f"{stride}, so its {arr.size:,} elements overlap in memory (an "
                                 f"expanded tensor); a state dict of parameters never holds one")


def load_torch_state_dict(path):
    """Load a torch.save()d object (normally a state dict) with every tensor as a read-only
    ndarray view into its storage (copy one with np.array to change it). Raises
    UnsafePickleError if the pickle references anything but tensors and containers, and
    TorchFileError (an InputError) for a file that is not a well-formed PyTorch zip archive."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not a PyTorch zip archive (torch.save from PyTorch >= 1.6). "
                         f"Older formats are not supported: re-save it with a current PyTorch.")
    try:
        with zipfile.ZipFile(path) as zf:
            return _load_archive(zf, path)
    except TinyGPTError:
        raise
    except ZIP_ERRORS as e:
        raise TorchFileError(f"{path} is a damaged zip archive ({type(e).__name__}: {e})") from None


def _load_archive(zf: zipfile.ZipFile, path: Path):
    pickles = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise TorchFileError(f"{path}: expected one <archive>/data.pkl record, found {pickles}")
    prefix = pickles[0][: -len("data.pkl")]
    names, records = set(zf.namelist()), _Records(zf, path)
    byteorder = "little"
    if prefix + "byteorder" in names:
        byteorder = records.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise TorchFileError(f"{path}: unknown byteorder record {byteorder!r}")

    def read_record(key):
        name = f"{prefix}data/{key}"
        if name not in names:
            raise TorchFileError(f"{path}: the pickle refers to a missing record {name}")
        return name, records.read(name)

    data = records.read(pickles[0])
    _check_memo_indices(data, str(path))
    try:
        obj = _StateDictUnpickler(data, read_record, byteorder, str(path)).load()
    except (TinyGPTError, MemoryError, OSError):
        raise
    except Exception as e:  # a crafted pickle calls the stand-ins wrongly, ends early, ...
        raise TorchFileError(f"{path}: data.pkl is not a state dict torch.save writes "
                             f"({type(e).__name__}: {e})") from e
    _refuse_overlapping(obj, str(path))
    return obj
