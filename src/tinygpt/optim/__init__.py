"""Optimizers (book appendix A.7 and chapter 5) and the learning-rate schedule of appendix D."""
from .adamw import AdamW
from .optimizer import Optimizer
from .schedules import warmup_cosine_lr
from .sgd import SGD

__all__ = ["AdamW", "Optimizer", "SGD", "warmup_cosine_lr"]
