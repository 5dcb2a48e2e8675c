"""The layers the book uses, initialised like PyTorch's defaults so that training behaves alike."""
import contextlib
import contextvars
import math
import numbers

import numpy as np

from ..core.dtypes import DEFAULT_FLOAT
from ..core.random import generator
from . import functional as F
from .module import Module, Parameter
from ..errors import InputError, InputTypeError


def _sizes(owner: str, **sizes) -> tuple:
    """The layer sizes as ints, each a positive integer (nn.Linear(-1, 3) would fail in the init's
    math.sqrt with "math domain error", a float size deep inside NumPy)."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise InputTypeError(f"{owner}: {name} must be an integer, got {value!r}")
        if value < 1:
            raise InputError(f"{owner}: {name} must be a positive integer, got {value}")
    return tuple(int(v) for v in sizes.values())


_SKIP_INIT = contextvars.ContextVar("skip_init", default=False)


@contextlib.contextmanager
def skip_init():
    """Inside this block, Linear and Embedding allocate their parameters without drawing them
    (torch's `skip_init` / meta-device idea): for a model whose every parameter is loaded next, as
    `tinygpt.weights.load_pretrained` does. The random generator is not advanced, no time goes
    into drawing values that are overwritten (Llama 3.2 1B: 1.2 G values), and the memory is
    only touched by the load. The values inside are arbitrary until loaded."""
    token = _SKIP_INIT.set(True)
    try:
        yield
    finally:
        _SKIP_INIT.reset(token)


def _uniform(shape, bound, dtype):
    return _draw(lambda rng, n: rng.uniform(-bound, bound, size=n), shape, dtype)


def _draw(sample, shape, dtype, chunk: int = 1 << 20) -> np.ndarray:
    """`sample(rng, n)` float64 values cast into a new `dtype` array, `chunk` at a time.

    The values (and the generator's state after) equal one `sample(rng, size).astype(dtype)`:
    NumPy's generator draws each value after the previous one. Why in chunks: a one-shot float64
    temporary of GPT-2 124M's size is fresh memory, which the OS must fault in and zero, and it
    raises the peak memory by its size (bench/train_step.py's peak-RSS table; numbers in
    bench/README.md)."""
    out = np.empty(shape, dtype)
    if _SKIP_INIT.get():
        return out
    flat = out.reshape(-1)
    for start in range(0, flat.size, chunk):
        n = min(chunk, flat.size - start)
        flat[start:start + n] = sample(generator(), n)
    return out


class Linear(Module):
    """y = x @ W.T + b with W stored (out_features, in_features), as in torch.nn.Linear.
    Init: kaiming-uniform(a=sqrt(5)) for W and U(-1/sqrt(in), 1/sqrt(in)) for b, both of which
    come to U(-1/sqrt(in_features), 1/sqrt(in_features))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=None):
        in_features, out_features = _sizes("Linear", in_features=in_features, out_features=out_features)
        super().__init__()
        dtype = dtype or DEFAULT_FLOAT
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features) if in_features else 0.0
        self.weight = Parameter(_uniform((out_features, in_features), bound, dtype))
        self.bias = Parameter(_uniform((out_features,), bound, dtype)) if bias else None

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise InputError(f"Linear({self.in_features}, {self.out_features}) got input of shape "
                             f"{x.shape}: last dim must be {self.in_features}")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table (book section 2.7); init N(0, 1) like torch.nn.Embedding."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype=None):
        num_embeddings, embedding_dim = _sizes("Embedding", num_embeddings=num_embeddings,
                                               embedding_dim=embedding_dim)
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(_draw(lambda rng, n: rng.standard_normal(n),
                                      (num_embeddings, embedding_dim), dtype or DEFAULT_FLOAT))

    def forward(self, idx):
        return F.embedding(idx, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """The book's LayerNorm (section 4.2): parameters named `scale` and `shift`, eps 1e-5."""

    def __init__(self, emb_dim: int, eps: float = 1e-5, dtype=None):
        (emb_dim,) = _sizes("LayerNorm", emb_dim=emb_dim)
        super().__init__()
        self.eps = eps
        self.scale = Parameter(np.ones(emb_dim, dtype or DEFAULT_FLOAT))
        self.shift = Parameter(np.zeros(emb_dim, dtype or DEFAULT_FLOAT))

    def forward(self, x):
        return F.layer_norm(x, self.scale, self.shift, self.eps)


class GELU(Module):
    """GELU with the tanh approximation (book section 4.3)."""

    def forward(self, x):
        return F.gelu(x)


class Dropout(Module):
    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise InputError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Sequential(Module):
    def __init__(self, *modules):
        super().__init__()
        for i, module in enumerate(modules):
            setattr(self, str(i), module)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x


class ModuleList(Module):
    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __setitem__(self, i, module):
        setattr(self, str(range(len(self))[i]), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
