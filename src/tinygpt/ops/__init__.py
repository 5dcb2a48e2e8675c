"""Differentiable ops. Each is a `Function` (forward and backward side by side) plus a small
functional wrapper that checks its arguments. Tensor's methods and operators (`x + y`,
`x.sum()`) are written in core/tensor.py's class body, each a one-line call into these modules.

Naming rule: a `Function` is named after its op (`Mul`, `Softmax`, `CrossEntropy`); one whose name,
ignoring case, is also an nn Module's gets the suffix `Fn` (`LinearFn` is the op, `nn.Linear` the
layer; likewise `EmbeddingFn`, `LayerNormFn`, `DropoutFn`, `RMSNormFn`, `GeluFn` beside `GELU`,
`ReluFn` beside `ReLU`), so a traceback or a graph node names one thing. tests/test_function_names.py
checks it."""
from .attention import causal_attention
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

__all__ = ["causal_attention", "gelu", "log_softmax", "scaled_causal_softmax", "softmax", "masked_fill", "power",
           "tril", "triu", "where", "embedding", "getitem", "cross_entropy", "matmul", "dropout",
           "layer_norm", "grouped_query_attention", "rms_norm", "rope", "rope_tables", "silu",
           "argmax", "max", "mean", "sum", "topk", "var", "cat", "contiguous",
           "flatten", "permute", "reshape", "squeeze", "stack", "transpose", "unsqueeze"]
