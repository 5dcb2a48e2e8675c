"""The inference layers that stand in for Linear and Embedding once a model is quantized
(`tinygpt.quant.quantize`), and `QuantPacked`, which stands in for the fast twins' PackedLinears
(model/packing.py) so a decoded token still costs one product per packed group.

They hold a `QuantWeight` (weights.py), not a Parameter: the weight is not in `parameters()` or
`state_dict()` (quant.quantized_tensors lists it for saving) and no gradient reaches it. Inputs
are float32 activations; outputs are float32 Tensors without a graph.
"""
import numpy as np

from ..core.dtypes import check_index_array
from ..core.tensor import Tensor
from ..errors import InputError, InputIndexError
from ..nn import Module, Parameter
from .weights import QuantWeight


def _array(x) -> np.ndarray:
    return np.asarray(x.data if isinstance(x, Tensor) else x, dtype=np.float32)


class QuantLinear(Module):
    """y = x @ W.T + b with W a QuantWeight (out_features, in_features); inference only."""

    def __init__(self, weight: QuantWeight, bias: Parameter | None = None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        object.__setattr__(self, "weight", weight)   # not a Parameter: not trained, not saved
        self.bias = bias

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise InputError(f"QuantLinear({self.in_features}, {self.out_features}) got input of "
                             f"shape {x.shape}: last dim must be {self.in_features}")
        x = _array(x)
        out = self.weight.matmul(x.reshape(-1, self.in_features))    # (N, out)
        if self.bias is not None:
            out += self.bias.data
        return Tensor(out.reshape(*x.shape[:-1], self.out_features))  # (..., out)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, weights={self.weight.fmt}")


class QuantEmbedding(Module):
    """Rows of a QuantWeight (num_embeddings, embedding_dim) looked up by token id, float32."""

    def __init__(self, weight: QuantWeight):
        super().__init__()
        self.num_embeddings, self.embedding_dim = weight.shape
        object.__setattr__(self, "weight", weight)

    def forward(self, idx):
        ids = check_index_array(np.asarray(idx.data if isinstance(idx, Tensor) else idx), "embedding ids")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            bad = ids[(ids < 0) | (ids >= self.num_embeddings)].flat[0]
            raise InputIndexError(f"embedding id {bad} is out of range for a table of "
                                  f"{self.num_embeddings} rows")
        rows = self.weight.take(ids.reshape(-1))                      # (n, emb)
        return Tensor(rows.reshape(*ids.shape, self.embedding_dim))   # (*ids, emb)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, weights={self.weight.fmt}"


class QuantPacked:
    """The QuantLinear layers `owner.<name>` for each of `names`, answered by one product: their
    weights stacked into one QuantWeight whose row blocks each layer then holds as views (the
    PackedLinears contract: `pack()`, `intact`, `requires_grad`, `weight.dtype`, `__call__`)."""

    def __init__(self, owner, names):
        self.owner, self.names = owner, tuple(names)
        self.layers = self.views = self.sizes = ()
        self.weight = self.bias = None
        self.pack()

    def pack(self) -> bool:
        """Stack the layers' weights (and biases) if all are QuantLinear of one format, all with
        or all without bias. Returns `intact`."""
        if self.intact:
            return True
        layers = tuple(getattr(self.owner, name) for name in self.names)
        if any(type(layer) is not QuantLinear for layer in layers):
            return False
        if len({l.weight.fmt for l in layers}) != 1 or len({l.bias is None for l in layers}) != 1:
            return False
        self.layers, self.sizes = layers, tuple(l.out_features for l in layers)
        self.weight = QuantWeight.concat([l.weight for l in layers])           # (sum out, in)
        self.bias = None if layers[0].bias is None else np.concatenate([l.bias.data for l in layers])
        views, start = [], 0
        for layer, size in zip(layers, self.sizes):
            object.__setattr__(layer, "weight", self.weight.rows(start, start + size))
            if self.bias is not None:
                layer.bias.data = self.bias[start:start + size]
            views.append(layer.weight)
            start += size
        self.views = tuple(views)
        return True

    @property
    def intact(self) -> bool:
        """True while each attribute is the layer packed, holding the view it was given."""
        if not self.views:
            return False
        return all(getattr(self.owner, name) is layer and layer.weight is view
                   for name, layer, view in zip(self.names, self.layers, self.views))

    requires_grad = False

    def __call__(self, x: np.ndarray) -> list:
        """x (..., in) -> each layer's output (..., out_i), views of one product."""
        x2 = _array(x).reshape(-1, x.shape[-1])                               # (N, in)
        out = self.weight.matmul(x2)                                          # (N, sum out)
        if self.bias is not None:
            out += self.bias
        out = out.reshape(*x.shape[:-1], out.shape[-1])
        return np.split(out, np.cumsum(self.sizes)[:-1], axis=-1)
