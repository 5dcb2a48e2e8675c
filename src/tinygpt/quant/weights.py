"""`QuantWeight`: one (out, in) weight matrix held in fewer bytes, for inference only.

Formats (kernels/quant_gemv.py has the layouts and the kernels):
- "bf16": the raw 16 bits of each bfloat16 value in a uint16 array (NumPy has no bfloat16), 2
  bytes a weight, widened to float32 inside the kernels. A bf16 checkpoint is kept exactly.
- "q8": Q8_0-style, int8 values in blocks of 32 along `in`, one float32 scale per block
  (max|w| / 127): 1.125 bytes a weight. The scales are float32 rather than llama.cpp's float16
  so the kernel reads them without a conversion (0.0625 byte a weight more).

Products take and return float32 (`dtype`); nothing here records a gradient.
"""
import numpy as np

from ..errors import InputError
from ..kernels import quant_gemv as K

FORMATS = ("bf16", "q8")
CHUNK_ROWS = 1024  # rows quantized at a time from bf16 bits (no float32 copy of a whole matrix)


class QuantError(InputError):
    """A quantization request tinygpt cannot carry out (an unknown format, a layer the format
    does not fit, a quantized file that does not hold what it claims)."""


def check_format(fmt) -> str:
    """`fmt` if it names a format, else a QuantError listing them."""
    if fmt not in FORMATS:
        raise QuantError(f"unknown weight format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return fmt


class QuantWeight:
    """A weight (N, K) in format `fmt`: `data` (uint16 bits for bf16, int8 for q8) and, for q8,
    `scales` (N, K // 32) float32. `matmul(x)` = x @ W.T and `take(ids)` = W[ids] in float32."""

    dtype = np.dtype(np.float32)   # what its products take and return
    requires_grad = False

    def __init__(self, fmt: str, data: np.ndarray, scales: np.ndarray | None = None):
        self.fmt, self.data, self.scales = check_format(fmt), data, scales
        self.shape = data.shape                                      # (N, K)

    @classmethod
    def from_float(cls, w: np.ndarray, fmt: str) -> "QuantWeight":
        """Round a float (N, K) matrix to `fmt` (bf16: nearest even; q8: see the module doc)."""
        check_format(fmt)
        if fmt == "bf16":
            return cls(fmt, K.float32_to_bf16_ref(np.asarray(w, dtype=np.float32)))
        check_blocks(w.shape, "this weight")
        q = np.empty(w.shape, np.int8)
        s = np.empty((w.shape[0], w.shape[1] // K.BLOCK), np.float32)
        for r0 in range(0, w.shape[0], CHUNK_ROWS):      # float32 temporaries of a chunk only
            q[r0:r0 + CHUNK_ROWS], s[r0:r0 + CHUNK_ROWS] = K.q8_quantize_ref(w[r0:r0 + CHUNK_ROWS])
        return cls(fmt, q, s)

    @classmethod
    def from_bf16_bits(cls, bits: np.ndarray, fmt: str) -> "QuantWeight":
        """bf16 bits (N, K) uint16 -> kept as they are (bf16), or quantized a chunk of rows at a
        time (q8), never widening the whole matrix."""
        if check_format(fmt) == "bf16":
            return cls(fmt, bits)
        return cls.from_rows(bits.shape, fmt, lambda r0, r1: bits[r0:r1])

    @classmethod
    def from_rows(cls, shape, fmt: str, read) -> "QuantWeight":
        """The weight (N, K) whose rows r0:r1 `read(r0, r1)` returns (bf16 bits as uint16, or
        floats), converted CHUNK_ROWS rows at a time: a loader reads a chunk from the file at a
        time, so no copy of the whole matrix in its file's form is ever held."""
        check_format(fmt)
        if fmt == "q8":
            check_blocks(shape, "this weight")
            out = np.empty(shape, np.int8)
            s = np.empty((shape[0], shape[1] // K.BLOCK), np.float32)
        else:
            out, s = np.empty(shape, np.uint16), None
        for r0 in range(0, shape[0], CHUNK_ROWS):
            rows = read(r0, min(r0 + CHUNK_ROWS, shape[0]))
            rows = K.bf16_to_float32_ref(rows) if rows.dtype == np.uint16 else rows
            if fmt == "q8":
                out[r0:r0 + CHUNK_ROWS], s[r0:r0 + CHUNK_ROWS] = K.q8_quantize_ref(rows)
            else:
                out[r0:r0 + CHUNK_ROWS] = K.float32_to_bf16_ref(rows)
        return cls(fmt, out, s)

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + (0 if self.scales is None else self.scales.nbytes)

    def dequantize(self) -> np.ndarray:
        """The float32 (N, K) matrix the products use."""
        if self.fmt == "bf16":
            return K.bf16_to_float32_ref(self.data)
        return K.q8_dequantize_ref(self.data, self.scales)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        """x (M, K) float32 -> x @ W.T (M, N) float32."""
        if self.fmt == "bf16":
            return K.matmul_bf16(x, self.data)
        return K.matmul_q8(x, self.data, self.scales)

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Rows `ids` (1-D int) -> (len(ids), K) float32: an embedding lookup."""
        if self.fmt == "bf16":
            return K.take_bf16(self.data, ids)
        return K.take_q8(self.data, self.scales, ids)

    def rows(self, r0: int, r1: int) -> "QuantWeight":
        """Rows [r0, r1) as a QuantWeight of views (no copy)."""
        return QuantWeight(self.fmt, self.data[r0:r1], None if self.scales is None else self.scales[r0:r1])

    @staticmethod
    def concat(weights) -> "QuantWeight":
        """The row blocks of several weights of one format stacked into one (a copy)."""
        first = weights[0]
        scales = None if first.scales is None else np.concatenate([w.scales for w in weights])
        return QuantWeight(first.fmt, np.concatenate([w.data for w in weights]), scales)

    def __repr__(self):
        return f"QuantWeight({self.fmt}, shape={self.shape}, {self.nbytes / 1e6:.1f} MB)"


def check_blocks(shape, what: str) -> None:
    """q8 needs `in` (the last dimension) to be a whole number of 32-value blocks."""
    if len(shape) != 2 or shape[1] % K.BLOCK:
        raise QuantError(f"q8 cannot quantize {what}: shape {tuple(shape)} has {shape[-1]} "
                         f"inputs, not a multiple of the block size {K.BLOCK} (use bf16)")
