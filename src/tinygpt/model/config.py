"""Model configurations (book sections 4.1 and 5.5) and a validator that names the bad key.

A config is a plain dict, as in the book:

    GPT_CONFIG_124M = {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768,
                       "n_heads": 12, "n_layers": 12, "drop_rate": 0.1, "qkv_bias": False}

`model_configs` holds the size presets of section 5.5; `gpt2_config(name)` merges one into the
124M base with `context_length=1024` and `qkv_bias=True` (the OpenAI checkpoints use biases).
tinygpt adds one optional key, `tie_weights` (default False): share `out_head.weight` with
`tok_emb.weight`, as the GPT-2 checkpoints do (section 4.6).
"""
import numbers
from ..errors import InputError, InputKeyError, InputTypeError

GPT_CONFIG_124M = {
    "vocab_size": 50257,     # vocabulary size of the GPT-2 BPE tokenizer
    "context_length": 1024,  # maximum number of input tokens
    "emb_dim": 768,          # embedding dimension
    "n_heads": 12,           # attention heads per block
    "n_layers": 12,          # transformer blocks
    "drop_rate": 0.1,        # dropout rate
    "qkv_bias": False,       # bias in the query/key/value projections
}

model_configs = {
    "gpt2-small (124M)": {"emb_dim": 768, "n_layers": 12, "n_heads": 12},
    "gpt2-medium (355M)": {"emb_dim": 1024, "n_layers": 24, "n_heads": 16},
    "gpt2-large (774M)": {"emb_dim": 1280, "n_layers": 36, "n_heads": 20},
    "gpt2-xl (1558M)": {"emb_dim": 1600, "n_layers": 48, "n_heads": 25},
}

REQUIRED_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate",
                 "qkv_bias")
OPTIONAL_KEYS = {"tie_weights": False}


def gpt2_config(model_name: str, **overrides) -> dict:
    """The book's chapter-5 recipe: GPT_CONFIG_124M updated with a `model_configs` preset,
    `context_length=1024` and `qkv_bias=True`, then any `overrides`; validated."""
    if model_name not in model_configs:
        raise InputKeyError(f"unknown model {model_name!r}; choose one of {', '.join(model_configs)}")
    cfg = {**GPT_CONFIG_124M, **model_configs[model_name], "context_length": 1024,
           "qkv_bias": True, **overrides}
    return validate_config(cfg)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)  # NumPy ints count


def validate_config(cfg, where=None) -> dict:
    """Check a GPT config dict and return it with optional keys filled in (a new dict).
    Raises KeyError for a missing key, ValueError for an unknown key or a bad value (an int
    that is not a positive int -- a bool, a float or a string is refused --, a drop_rate that
    is not a finite number in [0, 1), a flag that is not True or False); each message names the
    key, after `where` (the file the config came from) when given."""
    at = f"{where}: " if where is not None else ""
    if not isinstance(cfg, dict):
        raise InputTypeError(f"{at}a GPT config must be a dict, got {type(cfg).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise InputKeyError(f"{at}GPT config is missing key(s) {', '.join(map(repr, missing))} "
                            f"(needs {', '.join(REQUIRED_KEYS)})")
    unknown = [k for k in cfg if k not in REQUIRED_KEYS and k not in OPTIONAL_KEYS]
    if unknown:
        raise InputError(f"{at}GPT config has unknown key(s) {', '.join(map(repr, unknown))}; "
                         f"known keys: {', '.join(REQUIRED_KEYS + tuple(OPTIONAL_KEYS))}")
    for key in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
        if not _is_int(cfg[key]) or cfg[key] <= 0:
            raise InputError(f"{at}GPT config key {key!r} must be a positive int, got {_shown(cfg[key])}")
    if cfg["emb_dim"] % cfg["n_heads"]:
        raise InputError(f"{at}GPT config key 'emb_dim' ({cfg['emb_dim']}) must be divisible by "
                         f"'n_heads' ({cfg['n_heads']})")
    rate = cfg["drop_rate"]
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate < 1.0:
        raise InputError(f"{at}GPT config key 'drop_rate' must be a number in [0, 1), got {_shown(rate)}")
    for key in ("qkv_bias", "tie_weights"):
        if key in cfg and not isinstance(cfg[key], bool):
            raise InputError(f"{at}GPT config key {key!r} must be True or False, got {_shown(cfg[key])}")
    return {**OPTIONAL_KEYS, **cfg}


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
