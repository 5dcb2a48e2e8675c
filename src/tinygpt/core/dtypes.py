"""The dtype policy, in one place.

float32 is the default; float64 works end to end (the finite-difference checks use it).
Index tensors are int64. A Python scalar mixed into a float tensor adopts the tensor's dtype,
because a NumPy float64 scalar would silently upcast float32 arrays under NumPy 2 promotion.
"""
import numpy as np

from ..errors import InputError, InputTypeError

DEFAULT_FLOAT = np.dtype(np.float32)
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_float(dtype) -> bool:
    return np.dtype(dtype) in FLOAT_DTYPES


NUMERIC_KINDS = "fiub"  # float, signed and unsigned integer, bool: what a Tensor may hold


def check_kind(arr: np.ndarray) -> np.ndarray:
    """Refuse arrays a Tensor cannot compute with (strings, Python objects, complex, dates)."""
    if arr.dtype.kind not in NUMERIC_KINDS:
        _refuse(arr.dtype)
    return arr


def _refuse(dtype):
    raise InputTypeError(f"a tensor holds numbers (float, integer or bool), got dtype {dtype} "
                         f"({_KIND_NAMES.get(dtype.kind, 'not a number')})")


_KIND_NAMES = {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers",
               "M": "dates", "m": "time spans", "V": "raw records"}


def as_array(data, dtype=None) -> np.ndarray:
    """Turn user data into an ndarray: Python floats become float32, ndarrays keep their dtype."""
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype.kind not in NUMERIC_KINDS:
            _refuse(dtype)
        try:
            return np.asarray(data, dtype=dtype)
        except (TypeError, ValueError) as err:
            raise InputTypeError(f"cannot make a {dtype} tensor from {type(data).__name__} data: "
                                 f"{err}") from None
    try:
        arr = check_kind(np.asarray(data))
    except ValueError as err:  # ragged nested lists
        raise InputError(f"cannot make a tensor from this data: {err}") from None
    if not isinstance(data, (np.ndarray, np.generic)) and arr.dtype == np.float64:
        arr = arr.astype(DEFAULT_FLOAT)  # Python floats and lists of them; NumPy values keep theirs
    if arr.dtype.kind == "f" and arr.dtype not in FLOAT_DTYPES:
        arr = arr.astype(DEFAULT_FLOAT)  # float16 and friends are not supported
    elif arr.dtype.kind in "iu":
        arr = arr.astype(np.int64, copy=False)
    return arr


def require_float(dtype, what: str) -> None:
    """Ops that only make sense in floating point (softmax, layer_norm, mean ...) refuse integer
    and bool tensors, as PyTorch does, instead of computing in integers (softmax of [1, 2, 3] as
    [0, 0, 1])."""
    if not is_float(dtype):
        raise InputTypeError(f"{what} needs a float32/float64 tensor, got {np.dtype(dtype)} "
                             "(convert it with .float())")


def check_index_array(idx: np.ndarray, what: str) -> np.ndarray:
    if idx.dtype.kind not in "iu":
        raise InputTypeError(f"{what} must be an integer array (int64), got dtype {idx.dtype}")
    return idx.astype(np.int64, copy=False)
