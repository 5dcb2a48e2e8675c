"""tinygpt.quant: weights in fewer bytes for generation (bf16 and Q8_0-style 8-bit).

Decoding a token reads every weight once, so on a CPU its speed is the memory bandwidth divided
by the weight bytes: float32 reads 4 bytes a weight, bf16 2, q8 1.125. `quantize(model, fmt)`
turns a loaded model into one whose Linear and Embedding weights are held in `fmt` (the book's
classes are left as they are: stand-ins take their places, layers.py); `load_pretrained(...,
dtype="bf16")` or `quantize="q8"` (tinygpt.weights) builds one straight from a checkpoint, and the
CLI's `--dtype bf16` / `--quantize q8` and `tinygpt quantize` use these. Inference only: training
stays float32/float64. The kernels are in tinygpt/kernels/quant_gemv.py.
"""
from .convert import (SCALES, check_bf16_entries, q8_from_entries, quantize, quantized_format,
                      quantized_tensors)
from .layers import QuantEmbedding, QuantLinear, QuantPacked
from .stats import GenerationStats, decode_bytes
from .weights import FORMATS, QuantError, QuantWeight, check_format

__all__ = ["FORMATS", "SCALES", "GenerationStats", "QuantEmbedding", "QuantError", "QuantLinear",
           "QuantPacked", "QuantWeight", "check_bf16_entries", "check_format", "decode_bytes",
           "q8_from_entries", "quantize", "quantized_format", "quantized_tensors", "weights_format"]


def weights_format(dtype=None, quantize=None):
    """The format a load asks for: "q8" with quantize="q8", "bf16" with dtype "bf16"/"bfloat16",
    None for float weights (dtype float32/float64 or None). QuantError names a bad value."""
    if quantize is not None:
        if quantize != "q8":
            raise QuantError(f"unknown quantization {quantize!r}: the one supported is q8")
        return "q8"
    if isinstance(dtype, str) and dtype.lower() in ("bf16", "bfloat16"):
        return "bf16"
    return None
