"""Differentiable ops. Each is a `Function` (forward and backward side by side) plus a small
functional wrapper that checks its arguments. Importing this package attaches them to Tensor as
its methods and operators (ops/methods.py)."""
from .activations import gelu, log_softmax, scaled_causal_softmax, softmax
from .elementwise import masked_fill, power, tril, triu, where
from .indexing import embedding, getitem
from .loss import cross_entropy
from .matmul import matmul
from .modern import grouped_query_attention, rms_norm, rope, rope_tables, silu
from .normalization import dropout, layer_norm
from .reduce import argmax, max, mean, sum, topk, var
from .shape import (cat, contiguous, flatten, permute, reshape, squeeze, stack, transpose,
                    unsqueeze)
from .methods import attach_tensor_methods

attach_tensor_methods()

__all__ = ["gelu", "log_softmax", "scaled_causal_softmax", "softmax", "masked_fill", "power",
           "tril", "triu", "where", "embedding", "getitem", "cross_entropy", "matmul", "dropout",
           "layer_norm", "grouped_query_attention", "rms_norm", "rope", "rope_tables", "silu",
           "argmax", "max", "mean", "sum", "topk", "var", "cat", "contiguous",
           "flatten", "permute", "reshape", "squeeze", "stack", "transpose", "unsqueeze"]
