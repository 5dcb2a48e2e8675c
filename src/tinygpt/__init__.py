"""tinygpt: the book "Build a Large Language Model (From Scratch)" on a small NumPy + Numba
tensor library with reverse-mode autograd. This module never imports torch, and importing it
changes nothing outside tinygpt (the process-wide malloc setting is the explicit `tune_malloc()`)."""
from .kernel_choice import kernel_choice_problem

__version__ = "0.1.0"
KERNEL_CHOICE_PROBLEM = kernel_choice_problem()   # a bad TINYGPT_KERNELS: see kernel_choice.py

if KERNEL_CHOICE_PROBLEM is None:
    from .core.autograd import Function, is_grad_enabled, no_grad
    from .core.malloc import tune_malloc
    from .core.random import get_rng_state, manual_seed, set_rng_state
    from .core.tensor import Tensor, arange, ones, rand, randn, tensor, zeros
    from .ops import (argmax, cat, matmul, stack, topk, tril, triu, where)
    from .ops.sampling import multinomial
    from . import nn, optim  # noqa: E402  (nn and optim build on the names above)
    from .model import (GPT_CONFIG_124M, GPTModel, Llama3Model, Qwen3Model, generate,  # noqa: E402
                        generate_text_simple)

# tinygpt.testing (gradient checks) and tinygpt.viz (graph drawing, activation statistics) load on
# first use, so `import tinygpt` pays nothing for them
_LAZY_MODULES = ("testing", "viz")


def __getattr__(name):
    if KERNEL_CHOICE_PROBLEM is not None and not name.startswith("__"):
        from .errors import InputError
        raise InputError(KERNEL_CHOICE_PROBLEM)
    if name in _LAZY_MODULES:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["Tensor", "Function", "tensor", "zeros", "ones", "randn", "rand", "arange", "tril", "triu", "cat",
           "stack", "where", "argmax", "topk", "matmul", "multinomial", "no_grad",
           "is_grad_enabled", "tune_malloc", "manual_seed", "get_rng_state", "set_rng_state", "nn", "optim",
           "GPTModel", "Qwen3Model", "Llama3Model", "GPT_CONFIG_124M", "generate", "generate_text_simple"]
