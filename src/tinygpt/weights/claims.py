"""What a config file claims, checked before anything is built from it.

A config.json (or an index's weight_map) can say anything: a string where a number belongs,
`true` where a count belongs, a list where a table belongs, 10^9 layers beside a file that holds
two. Two rules, applied by every loader in `tinygpt.weights`:

1. Every value is read through `ConfigValues`, which checks its JSON type and its range (an int
   is an int and not a bool, a float is finite, a flag is a real JSON boolean, a name is one of
   a known set, a table is an object) and refuses anything else with one WeightsError naming
   the file and the key.
2. The sizes a config claims (layer count, vocabulary, widths, heads) are compared with the
   tensor headers -- names and shapes, read without touching the data -- before any table is
   enumerated per claimed layer or any parameter is allocated (`count_layers`, `claim_matches`):
   memory follows the file, never the claim.
"""
import json
import math
import re
from pathlib import Path

from ..errors import InputError

MISSING = object()
DTYPE_NAMES = {"float32", "float16", "bfloat16", "float64", "float", "half", "double"}  # as transformers writes them


class WeightsError(InputError):
    """Weights that do not fit the model, or a config that does not fit its weights: missing or
    unexpected names, wrong shapes, a config value of the wrong type or out of range."""


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class ConfigValues:
    """Typed reads of one config dict: `int`, `number`, `flag`, `name`, `table` (and the groups
    `dtype`, `token_ids`, `unused`). Each returns the value, or `default` when the key is absent
    or null (a missing key without a default is refused), and raises WeightsError
    "<where>: <key> must be ..., got ..." for a value of the wrong type or out of range."""

    def __init__(self, config: dict, where, prefix: str = ""):
        self.config, self.where, self.prefix = config, where, prefix

    def refuse(self, key: str, what: str) -> WeightsError:
        return WeightsError(f"{self.where}: {self.prefix}{key} {what}")

    def _get(self, key, default):
        """(value, True) when `key` holds a value to check, else (default, False)."""
        value = self.config.get(key, MISSING)
        if value is MISSING or value is None:  # JSON null: as if absent, as transformers reads it
            if default is MISSING:
                raise self.refuse(key, "is missing")
            return default, False
        return value, True

    def int(self, key, default=MISSING, minimum=1):
        """An integer >= `minimum` (JSON 12, not 12.0, "12" or true)."""
        value, given = self._get(key, default)
        if not given:
            return value
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.refuse(key, f"must be an integer >= {minimum}, got {_shown(value)}")
        return value

    def number(self, key, default=MISSING, positive=True):
        """A finite number (> 0 when `positive`) as a float."""
        value, given = self._get(key, default)
        if not given:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or (positive and value <= 0):
            kind = "a finite number > 0" if positive else "a finite number"
            raise self.refuse(key, f"must be {kind}, got {_shown(value)}")
        return float(value)

    def flag(self, key, default=MISSING):
        """A JSON boolean (true/false; not "no", 0 or 1)."""
        value, given = self._get(key, default)
        if given and not isinstance(value, bool):
            raise self.refuse(key, f"must be true or false, got {_shown(value)}")
        return value

    def name(self, key, default=MISSING, choices=None):
        """A string, one of `choices` when given."""
        value, given = self._get(key, default)
        if not given:
            return value
        if not isinstance(value, str) or (choices is not None and value not in choices):
            allowed = f" (one of {', '.join(sorted(choices))})" if choices is not None else ""
            raise self.refuse(key, f"must be a string{allowed}, got {_shown(value)}")
        return value

    def table(self, key) -> "ConfigValues | None":
        """The JSON object at `key` as its own ConfigValues (its errors name `key.<inner key>`),
        or None when absent."""
        value, given = self._get(key, None)
        if not given:
            return None
        if not isinstance(value, dict):
            raise self.refuse(key, f"must be a JSON object, got {_shown(value)}")
        return ConfigValues(value, self.where, f"{self.prefix}{key}.")

    def dtype(self):
        """torch_dtype (transformers 4) and dtype (5), when given: a known dtype name."""
        for key in ("torch_dtype", "dtype"):
            self.name(key, None, choices=DTYPE_NAMES)

    def probability(self, key):
        """A dropout rate, when given: a number in [0, 1]."""
        p = self.number(key, 0.0, positive=False)
        if not 0.0 <= p <= 1.0:
            raise self.refuse(key, f"must be a probability in [0, 1], got {_shown(p)}")

    def token_ids(self):
        """bos/eos/pad_token_id, when given: a token id (an integer >= 0) or a list of them.
        (Not bounded by vocab_size: the tokenizer, not the config, decides which ids occur.)"""
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value, given = self._get(key, None)
            ids = value if isinstance(value, list) else [value]
            if given and not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                 for i in ids):
                raise self.refuse(key, f"must be a token id (an integer >= 0) or a list of them, "
                                       f"got {_shown(value)}")

    def unused(self, flags=(), counts=(), numbers=(), probabilities=()):
        """Keys tinygpt does not read, checked all the same (a config that breaks them is not
        one to half-read): JSON booleans, integers >= 0, finite numbers, dropout rates."""
        for key in probabilities:
            self.probability(key)
        for key in flags:
            self.flag(key, None)
        for key in counts:
            self.int(key, None, minimum=0)
        for key in numbers:
            self.number(key, None, positive=False)

    def divides(self, key, by_key, value, by):
        if value % by:
            raise self.refuse(key, f"({value}) must be a multiple of {by_key} ({by})")


def shard_names(weight_map, index, folder: Path = None) -> list:
    """The shard files of an index's weight_map: it must map tensor names (str) to plain
    .safetensors file names (str, no folder part) that exist in `folder` (when given: before a
    download they do not yet); sorted, each once."""
    if not isinstance(weight_map, dict) or not weight_map:
        raise WeightsError(f"{index}: weight_map must be a JSON object of tensor name -> shard "
                           f"file, got {_shown(weight_map)}")
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or shard in (".", "..") \
                or "\\" in shard or not shard.endswith(".safetensors"):
            raise WeightsError(f"{index}: weight_map[{_shown(tensor)}] must be a .safetensors "
                               f"file name in the folder, got {_shown(shard)}")
    names = sorted(set(weight_map.values()))
    for shard in names if folder is not None else ():
        if not (folder / shard).is_file():
            raise WeightsError(f"{index}: weight_map names shard {shard!r}, which is not a file "
                               f"in {folder}")
    return names


def count_layers(names, prefix: str) -> list:
    """The sorted block numbers that tensor `names` carry after `prefix` ("h.", "model.layers.").
    A number of more than 9 digits is no block (the name is then reported as unexpected)."""
    regex = re.compile(re.escape(prefix) + r"(\d{1,9})\.")
    return sorted({int(m.group(1)) for n in names if (m := regex.match(n))})


def check_layer_count(claimed: int, layers: list, key: str, where) -> None:
    """Refuse a claimed layer count that the tensor names do not bear out (blocks 0..n-1), without
    making anything of the claimed length."""
    if len(layers) != claimed or (layers and layers[-1] != claimed - 1):
        held = (f"blocks {layers[0]}..{layers[-1]} ({len(layers)} of them)" if layers
                else "no blocks")
        raise WeightsError(f"{where}: {key} is {claimed} but the weights hold {held}")


def claim_matches(key: str, claimed, tensor: str, shape, implied, where, unit: str = "") -> None:
    """Refuse when `claimed` (config `key`) differs from what tensor `tensor` of `shape` implies
    (`unit`: what the implied count is counted in, e.g. " of head_dim 8")."""
    if claimed != implied:
        raise WeightsError(f"{where}: {key} is {claimed} but {tensor} has shape {tuple(shape)}, "
                           f"which implies {key} {implied}{unit}")


def read_json_config(path) -> dict:
    """A config.json as a dict; an unreadable one is an InputError naming the file."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, a huge number, deep nesting
        raise InputError(f"{path} is not a valid JSON config ({type(e).__name__}: "
                         f"{str(e)[:200]})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path} holds a JSON {type(config).__name__}, not a config object")
    return config
