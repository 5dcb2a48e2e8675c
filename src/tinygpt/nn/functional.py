"""Functional forms of the layers, as in `torch.nn.functional` (the differentiable ops live in
`tinygpt.ops`; this module is the place a reader of the book looks for them)."""
from ..ops import (causal_attention, cross_entropy, dropout, embedding, gelu, layer_norm,
                   log_softmax, scaled_causal_softmax, softmax)
from ..ops.activations import logsigmoid
from ..ops.elementwise import ReluFn
from ..ops.modern import grouped_query_attention, rms_norm, rope, rope_tables, silu
from ..ops.linear import LinearFn
from ..errors import InputError, InputTypeError


def relu(x):
    return ReluFn.apply(x)


def linear(x, weight, bias=None):
    """x (..., in) @ weight.T + bias -> (..., out), weight stored (out_features, in_features)
    like PyTorch. One op (tinygpt.ops.linear), which flattens x to 2-D for BLAS."""
    if x.dtype != weight.dtype:
        raise InputTypeError(f"linear: input dtype {x.dtype} != weight dtype {weight.dtype}")
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise InputError(f"linear: input of shape {x.shape} does not end in in_features = "
                         f"{weight.shape[1]} (weight {weight.shape})")
    return LinearFn.apply(x, weight) if bias is None else LinearFn.apply(x, weight, bias)


__all__ = ["causal_attention", "cross_entropy", "dropout", "embedding", "gelu", "layer_norm", "log_softmax", "logsigmoid",
           "scaled_causal_softmax", "softmax", "relu", "linear", "rms_norm", "rope", "rope_tables",
           "silu", "grouped_query_attention"]
