"""`PackedLinears`: several Linear layers of one module that read the same input, answered by one
product. The fast attention and feed-forward classes (fast_attention.py, fast_modern.py) use it for
W_query/W_key/W_value and for SwiGLU's fc1/fc2; a model gets them only through
`tinygpt.model.for_inference` (inference.py). The models a user builds hold each weight in its
own array.

Packing copies the layers' current weights (and biases) into one (sum of out_features, in) array
and hands each Parameter its row block as a view. Then x @ packed.T computes every layer's output
in one pass over x and one BLAS call; when decoding, one matrix-vector product instead of two or
three, each with its call overhead.

Why the packed product cannot read stale weights: the packed array IS the weights' storage, so
every in-place change lands in it: optimizer steps, merge_lora, and load_state_dict, which (as
PyTorch's) copies into each parameter's own array rather than replacing it. Whatever breaks
that link ends the packed product, and `intact` checks the link on every use: each attribute must
still hold the Linear module that was packed, holding the very view it was given. A new weight
array (Module.to, assigning `.data`) or a replaced layer (LoRA's LinearWithLoRA, or any module)
fails the check, and the owner then runs its layers themselves, whatever they compute. `pack()`
packs again whatever plain `Linear` layers the names hold (for_inference calls it on a layer that
is fast already, e.g. after a cast); it never packs any other layer, such as a LoRA wrapper,
whose own computation the packed product would skip.

Memory: packing allocates the packed array, then each Parameter drops its own array for its
view, so packing one module at a time holds at most that module's weights twice.
"""
import numpy as np

from .. import kernels
from ..nn import Linear


class PackedLinears:
    """The Linear layers `owner.<name>` for each of `names`, packed (see the module docstring)."""

    def __init__(self, owner, names):
        self.owner, self.names = owner, tuple(names)
        self.layers = self.sizes = self.views = ()  # what was packed; views: (weight, bias or None)
        self.weight = self.bias = None
        self.pack()

    def pack(self) -> bool:
        """Copy the layers' current weights (and biases) into one array and give each Parameter
        its rows as a view. Only plain `Linear` layers are packed (`type is`, so never a LoRA
        wrapper or any other layer put in their place), all of one dtype, all with or all without
        bias; already packed weights are left as they are. Returns `intact`."""
        if self.intact:
            return True
        layers = tuple(getattr(self.owner, name) for name in self.names)
        if any(type(layer) is not Linear for layer in layers):
            return False
        params = [(layer.weight, layer.bias) for layer in layers]
        dtypes = {p.dtype for pair in params for p in pair if p is not None}
        if len(dtypes) != 1 or len({b is None for _, b in params}) != 1:
            return False
        self.layers, self.sizes = layers, tuple(w.shape[0] for w, _ in params)
        self.weight = np.concatenate([w.data for w, _ in params])            # (sum out, in)
        self.bias = None if params[0][1] is None else np.concatenate([b.data for _, b in params])
        views, start = [], 0
        for (w, b), size in zip(params, self.sizes):
            rows = slice(start, start + size)
            w.data = self.weight[rows]                                        # (out, in) view
            if b is not None:
                b.data = self.bias[rows]                                      # (out,) view
            views.append((w.data, None if b is None else b.data))
            start += size
        self.views = tuple(views)
        return True

    @property
    def intact(self) -> bool:
        """True while each attribute is the Linear that was packed and still holds its views
        (identity tests: a weight with a new array or a replaced layer is never read packed)."""
        if not self.views:
            return False
        for name, layer, (w, b) in zip(self.names, self.layers, self.views):
            if getattr(self.owner, name) is not layer or layer.weight.data is not w:
                return False
            if (layer.bias is None) != (b is None) or (b is not None and layer.bias.data is not b):
                return False
        return True

    @property
    def requires_grad(self) -> bool:
        return any(p.requires_grad for layer in self.layers for p in (layer.weight, layer.bias)
                   if p is not None)

    def __call__(self, x: np.ndarray) -> list:
        """x (..., in) -> each layer's output (..., out_i), views of one (..., sum out) product
        (no graph: for callers under no_grad or with nothing to differentiate)."""
        x2 = x.reshape(-1, x.shape[-1])                                       # (N, in)
        out = kernels.matmul(x2, self.weight.T)                               # (N, sum out)
        if self.bias is not None:
            out += self.bias
        out = out.reshape(*x.shape[:-1], out.shape[-1])
        bounds = np.cumsum(self.sizes)[:-1]
        return np.split(out, bounds, axis=-1)


class FastTwin:
    """What the fast twins (FastMultiHeadAttention, FastGroupedQueryAttention, FastFeedForward)
    share: `from_book`, `pack` and `packed`, over the PackedLinears they keep as attribute
    `_group` of the Linears `_names`. Listed first among a twin's bases."""
    _group, _names = None, ()

    @classmethod
    def from_book(cls, book):
        """The fast twin of the book-shaped layer `book`: it takes over book's state (its very
        Linears and Parameters, hooks and mode; nothing is copied) and packs the projections
        `_names`. Use it in book's place (`for_inference` does)."""
        return fast_twin(cls, book, cls._group, cls._names)

    def pack(self) -> bool:
        """Pack the projections (again): see this module's docstring. Returns `packed`."""
        return getattr(self, self._group).pack()

    @property
    def packed(self) -> bool:
        """True while each projection is the Linear that was packed and still holds its views."""
        return getattr(self, self._group).intact


def fast_twin(cls, book, attr: str, names):
    """An instance of `cls`, a fast subclass of type(book), that takes over `book`'s state (its
    very sub-modules and Parameters, hooks and train/eval mode; nothing is copied), with a
    PackedLinears of the Linears `names` as attribute `attr`. It replaces `book` in its parent."""
    fast = cls.__new__(cls)
    fast.__dict__.update(vars(book))
    setattr(fast, attr, PackedLinears(fast, names))
    return fast
