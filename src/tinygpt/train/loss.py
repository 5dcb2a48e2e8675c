"""Loss over batches and loaders (book section 5.1): the next-token cross-entropy."""
import math

import numpy as np

from ..core.autograd import no_grad
from ..nn import functional as F


def calc_loss_batch(input_batch, target_batch, model):
    """Mean cross-entropy of `model`'s next-token predictions: inputs and targets (batch, tokens)."""
    logits = model(input_batch)                                  # (batch, tokens, vocab)
    return F.cross_entropy(logits.flatten(0, 1), np.asarray(target_batch).reshape(-1))


def calc_loss_loader(data_loader, model, num_batches=None, loss_fn=None) -> float:
    """Average batch loss over the loader, or over its first `num_batches` batches.
    Returns NaN for an empty loader, as the book does. `loss_fn(inputs, targets, model)` defaults
    to the next-token `calc_loss_batch`; chapter 6 passes its last-token classification loss."""
    loss_fn = loss_fn or calc_loss_batch
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    with no_grad():
        for i, (inputs, targets) in enumerate(data_loader):
            if i >= num_batches:
                break
            total += loss_fn(inputs, targets, model).item()
    return total / num_batches


def perplexity(loss: float) -> float:
    """exp(loss): the effective number of tokens the model is choosing among (section 5.1.2)."""
    return math.exp(loss)
