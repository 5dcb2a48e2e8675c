"""Sampling from a categorical distribution with the tinygpt generator (book section 5.3)."""
import numpy as np

from ..core.random import generator
from ..core.tensor import Tensor, as_tensor
from ..errors import InputError


def multinomial(probs, num_samples: int = 1) -> Tensor:
    """Draw `num_samples` ids (with replacement) from each row of `probs` (..., n) -> int64 (..., num_samples).
    Rows need not be normalised; negative or all-zero rows are an error."""
    p = as_tensor(probs).data.astype(np.float64)
    if p.ndim == 0 or (p < 0).any() or not np.isfinite(p).all():
        raise InputError("multinomial needs a non-empty array of finite, non-negative probabilities")
    totals = p.sum(axis=-1, keepdims=True)
    if (totals <= 0).any():
        raise InputError("multinomial: a row of probabilities sums to zero")
    cdf = np.cumsum(p / totals, axis=-1)
    u = generator().random(p.shape[:-1] + (num_samples,))
    rows = cdf.reshape(-1, p.shape[-1])
    draws = [np.searchsorted(row, uu, side="right") for row, uu in zip(rows, u.reshape(len(rows), -1))]
    ids = np.minimum(np.stack(draws), p.shape[-1] - 1).astype(np.int64)
    return Tensor(ids.reshape(p.shape[:-1] + (num_samples,)))
