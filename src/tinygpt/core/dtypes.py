"""The dtype policy, in one place.

float32 is the default; float64 works end to end (the finite-difference checks use it).
Index tensors are int64. A Python scalar mixed into a float tensor adopts the tensor's dtype,
because a NumPy float64 scalar would silently upcast float32 arrays under NumPy 2 promotion.
"""
import numpy as np

from ..errors import InputTypeError

DEFAULT_FLOAT = np.dtype(np.float32)
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_float(dtype) -> bool:
    return np.dtype(dtype) in FLOAT_DTYPES


def as_array(data, dtype=None) -> np.ndarray:
    """Turn user data into an ndarray: Python floats become float32, ndarrays keep their dtype."""
    if dtype is not None:
        return np.asarray(data, dtype=np.dtype(dtype))
    if isinstance(data, (np.ndarray, np.generic)):  # NumPy values keep their dtype
        arr = np.asarray(data)
    else:
        arr = np.asarray(data)
        if arr.dtype == np.float64:  # Python floats and lists of them
            arr = arr.astype(DEFAULT_FLOAT)
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
