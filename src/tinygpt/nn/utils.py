"""Training utilities: gradient clipping by global norm (book appendix D.3)."""
import math

import numpy as np


def clip_grad_norm_(parameters, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most `max_norm`, like
    torch.nn.utils.clip_grad_norm_; returns the norm before clipping."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    total = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads))
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= g.dtype.type(coef)
    return total
