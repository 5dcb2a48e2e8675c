"""Read a PyTorch `.pth`/`.pt`/`.bin` state dict as NumPy arrays, without importing torch.

`torch.save` (PyTorch >= 1.6) writes a zip archive:

    <archive>/data.pkl      a pickle of the object (e.g. an OrderedDict of tensors)
    <archive>/data/<key>    the raw little-endian bytes of each storage
    <archive>/byteorder     "little" or "big" (absent in older files: little)

In data.pkl a tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
and each storage is a *persistent id* ("storage", torch.FloatStorage, key, location, numel)
pointing at data/<key>. We unpickle with `find_class` restricted to the handful of globals a
state dict needs; any other global (`os.system`, `builtins.eval`, a user class, ...) is refused
before it is resolved, so nothing in the file runs. Tensors become NumPy arrays (bfloat16 is
widened to float32).
"""
import _compat_pickle
import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from .safetensors_io import bf16_to_float32
from ..errors import InputError, TinyGPTError


class UnsafePickleError(TinyGPTError, pickle.UnpicklingError):
    """The pickle asked for something a state dict never contains."""


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
    """A loaded storage: a flat array of raw elements (bfloat16 still as uint16 bits)."""

    def __init__(self, array: np.ndarray, bf16: bool):
        self.array, self.bf16 = array, bf16


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """Rebuild a tensor as a NumPy copy of the strided view into its storage."""
    if not isinstance(storage, _Storage):
        raise UnsafePickleError(f"_rebuild_tensor_v2 expects a storage, got {type(storage).__name__}")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    flat, offset = storage.array, int(storage_offset)
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
        raise pickle.UnpicklingError(f"bad tensor geometry: offset {offset}, size {size}, stride {stride}")
    if all(size):  # a non-empty tensor must lie inside its storage
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.size:
            raise pickle.UnpicklingError(f"tensor of size {size}, stride {stride} at offset {offset} "
                                         f"reads element {last} of a storage of {flat.size}")
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride], writeable=False)
        out = np.array(view, order="C")  # own, contiguous memory
    else:
        out = np.zeros(size, flat.dtype)
    return bf16_to_float32(out) if storage.bf16 else out


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
                and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError(f"refusing to load {self._source}: unknown persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        key = str(key)
        if key not in self._storages:
            bf16 = storage_type.dtype == "bfloat16"
            dtype = np.dtype("u2" if bf16 else storage_type.dtype)
            dtype = dtype.newbyteorder("<" if self._byteorder == "little" else ">")
            raw = self._read_record(key)
            if len(raw) < int(numel) * dtype.itemsize:
                raise pickle.UnpicklingError(f"{self._source}: storage {key} holds {len(raw)} bytes, "
                                             f"needs {numel} x {dtype.itemsize}")
            arr = np.frombuffer(raw, dtype=dtype, count=int(numel))
            self._storages[key] = _Storage(arr.astype(dtype.newbyteorder("="), copy=False), bf16)
        return self._storages[key]


def load_torch_state_dict(path):
    """Load a torch.save()d object (normally a state dict) with every tensor as an ndarray.
    Raises UnsafePickleError if the pickle references anything but tensors and containers,
    and ValueError for a file that is not a PyTorch zip archive."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not a PyTorch zip archive (torch.save from PyTorch >= 1.6). "
                         f"Older formats are not supported: re-save it with a current PyTorch.")
    with zipfile.ZipFile(path) as zf:
        pickles = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise InputError(f"{path}: expected one <archive>/data.pkl record, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        names = set(zf.namelist())
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode().strip()
            if byteorder not in ("little", "big"):
                raise InputError(f"{path}: unknown byteorder record {byteorder!r}")

        def read_record(key):
            name = f"{prefix}data/{key}"
            if name not in names:
                raise pickle.UnpicklingError(f"{path}: the pickle refers to a missing record {name}")
            return zf.read(name)

        return _StateDictUnpickler(zf.read(pickles[0]), read_record, byteorder, str(path)).load()
