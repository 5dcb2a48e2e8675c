"""Neural-network building blocks (book appendix A and chapters 3-4)."""
from . import functional, utils
from .layers import (GELU, Dropout, Embedding, LayerNorm, Linear, ModuleList, ReLU, Sequential,
                     skip_init)
from .module import Module, Parameter

__all__ = ["functional", "utils", "GELU", "Dropout", "Embedding", "LayerNorm", "Linear",
           "ModuleList", "ReLU", "Sequential", "Module", "Parameter", "skip_init"]
