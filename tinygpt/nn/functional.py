"""Functional forms of the layers, as in `torch.nn.functional` (the differentiable ops live in
`tinygpt.ops`; this module is the place a reader of the book looks for them)."""
from ..ops import (cross_entropy, dropout, embedding, gelu, layer_norm, log_softmax,
                   scaled_causal_softmax, softmax)
from ..ops.elementwise import Relu
from ..ops.linear import Linear


def relu(x):
    return Relu.apply(x)


def linear(x, weight, bias=None):
    """x @ weight.T + bias, with weight stored (out_features, in_features) like PyTorch.
    Activations are flattened to 2-D around the product so BLAS takes its GEMM path."""
    lead = x.shape[:-1]
    x2d = x.reshape(-1, x.shape[-1])                              # (rows, in)
    if x2d.dtype != weight.dtype:
        raise TypeError(f"linear: input dtype {x2d.dtype} != weight dtype {weight.dtype}")
    args = (x2d, weight) if bias is None else (x2d, weight, bias)
    return Linear.apply(*args).reshape(*lead, weight.shape[0])    # (..., out)


__all__ = ["cross_entropy", "dropout", "embedding", "gelu", "layer_norm", "log_softmax",
           "scaled_causal_softmax", "softmax", "relu", "linear"]
