"""Learning-rate schedule of the book's appendix D: linear warm-up, then cosine decay."""
import math


def warmup_cosine_lr(step: int, total_steps: int, warmup_steps: int, peak_lr: float,
                     initial_lr: float = 3e-5, min_lr: float = 1e-6) -> float:
    """The learning rate at `step` (0-based, as the book's loop counts after its first increment).

    Warm-up rises linearly from `initial_lr` towards `peak_lr` over `warmup_steps`; afterwards the
    rate follows half a cosine from `peak_lr` down to `min_lr` at `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return initial_lr + step * (peak_lr - initial_lr) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
