"""Functional forms of the layers, as in `torch.nn.functional` (the differentiable ops live in
`tinygpt.ops`; this module is the place a reader of the book looks for them)."""
from ..ops import (cross_entropy, dropout, embedding, gelu, layer_norm, log_softmax,
                   scaled_causal_softmax, softmax)
from ..ops.elementwise import Relu


def relu(x):
    return Relu.apply(x)


def linear(x, weight, bias=None):
    """x @ weight.T + bias, with weight stored (out_features, in_features) like PyTorch.
    Activations are flattened to 2-D around the product so BLAS takes its GEMM path."""
    lead = x.shape[:-1]
    out = x.reshape(-1, x.shape[-1]) @ weight.T
    if bias is not None:
        out = out + bias
    return out.reshape(*lead, weight.shape[0])


__all__ = ["cross_entropy", "dropout", "embedding", "gelu", "layer_norm", "log_softmax",
           "scaled_causal_softmax", "softmax", "relu", "linear"]
