"""GPT-2 weights in and out of tinygpt's GPTModel (book section 5.5 and appendix E's road out).

Everything hangs on one table, `HF_TO_BOOK`: Hugging Face GPT-2 name -> the book's name, how
the array changes, and its shape in the Hugging Face file. Three things differ from a plain copy:

  * "T":   GPT-2's Conv1D stores weights (in, out); the book's Linear is (out, in). Transposed
           here, in `_to_book`/`_to_hf`, and nowhere else.
  * "qkv": the fused c_attn (emb, 3*emb) is [query | key | value] along the output axis; it
           splits into W_query/W_key/W_value (weights transposed, biases split).
  * lm_head.weight is optional: GPT-2 ties the output head to wte, so files usually omit it;
           the model is then built with `tie_weights=True` (out_head IS tok_emb).

Loading checks every config value by type and range, then the sizes the config claims against
the tensors' shapes (the block count against the block numbers in the names, before any table is
made per claimed block; see `claims`), then every shape, listing missing and unexpected names in
one error.
"""
import json
import os
import re
from pathlib import Path

import numpy as np

from ..model.config import model_configs, validate_config
from ..model.gpt import GPTModel
from .download import GPT2_MODELS, download_gpt2, gpt2_dir, resolve_model_name
from .claims import (ConfigValues, WeightsError, check_layer_count, claim_matches,  # noqa: F401
                     count_layers, read_json_config)  # WeightsError, read_json_config: re-exported
from .safetensors_io import load_safetensors, save_safetensors
from .torch_pickle import load_torch_state_dict
from ..errors import InputError, MissingFileError
from ..files import atomic_write

# Shape symbols: V vocab_size, C context_length, E emb_dim (per block: 3E fused qkv, 4E MLP).
HF_TO_BOOK = [
    # Hugging Face GPT-2 name     tinygpt (book) name                            how     HF shape
    ("wte.weight",                "tok_emb.weight",                              "copy", ("V", "E")),
    ("wpe.weight",                "pos_emb.weight",                              "copy", ("C", "E")),
    ("h.{i}.ln_1.weight",         "trf_blocks.{i}.norm1.scale",                  "copy", ("E",)),
    ("h.{i}.ln_1.bias",           "trf_blocks.{i}.norm1.shift",                  "copy", ("E",)),
    ("h.{i}.attn.c_attn.weight",  "trf_blocks.{i}.att.W_{qkv}.weight",           "qkv",  ("E", "3E")),
    ("h.{i}.attn.c_attn.bias",    "trf_blocks.{i}.att.W_{qkv}.bias",             "qkv",  ("3E",)),
    ("h.{i}.attn.c_proj.weight",  "trf_blocks.{i}.att.out_proj.weight",          "T",    ("E", "E")),
    ("h.{i}.attn.c_proj.bias",    "trf_blocks.{i}.att.out_proj.bias",            "copy", ("E",)),
    ("h.{i}.ln_2.weight",         "trf_blocks.{i}.norm2.scale",                  "copy", ("E",)),
    ("h.{i}.ln_2.bias",           "trf_blocks.{i}.norm2.shift",                  "copy", ("E",)),
    ("h.{i}.mlp.c_fc.weight",     "trf_blocks.{i}.ff.layers.0.weight",           "T",    ("E", "4E")),
    ("h.{i}.mlp.c_fc.bias",       "trf_blocks.{i}.ff.layers.0.bias",             "copy", ("4E",)),
    ("h.{i}.mlp.c_proj.weight",   "trf_blocks.{i}.ff.layers.2.weight",           "T",    ("4E", "E")),
    ("h.{i}.mlp.c_proj.bias",     "trf_blocks.{i}.ff.layers.2.bias",             "copy", ("E",)),
    ("ln_f.weight",               "final_norm.scale",                            "copy", ("E",)),
    ("ln_f.bias",                 "final_norm.shift",                            "copy", ("E",)),
    ("lm_head.weight",            "out_head.weight",                             "copy", ("V", "E")),
]
QKV = ("query", "key", "value")   # order of the three parts of c_attn
OPTIONAL_HF = {"lm_head.weight"}  # absent when tied to wte
IGNORED_HF = re.compile(r"h\.\d+\.attn\.(masked_)?bias")        # causal-mask buffers, not weights
IGNORED_BOOK = re.compile(r"trf_blocks\.\d+\.att\.mask")       # the book's mask buffers
HEADS_BY_EMB = {c["emb_dim"]: c["n_heads"] for c in model_configs.values()}  # 768 -> 12, ...
GPT2_REPOS = {name: info["repo"] for name, info in GPT2_MODELS.items()}  # for the CLI hint


# Where a config's sizes show in the weights: {book names?: {cfg key: (tensor, axis)}}.
SIZE_TENSORS = {book: {"vocab_size": (tok, 0), "context_length": (pos, 0), "emb_dim": (tok, 1)}
                for book, (tok, pos) in {False: ("wte.weight", "wpe.weight"),
                                         True: ("tok_emb.weight", "pos_emb.weight")}.items()}
BLOCKS = {False: "h.", True: "trf_blocks."}  # the prefix of a block's tensor names
BOOK_KEYS = {k: k for k in ("vocab_size", "context_length", "emb_dim", "n_layers", "n_heads")}
HF_KEYS = {"vocab_size": "vocab_size", "context_length": "n_positions", "emb_dim": "n_embd",
           "n_layers": "n_layer", "n_heads": "n_head"}


# --- config.json <-> the book's cfg dict -------------------------------------------------
def hf_config_to_cfg(hf: dict, drop_rate: float = 0.0, where="GPT-2 config") -> dict:
    """A Hugging Face GPT2Config dict -> the book's cfg (qkv_bias=True: GPT-2 has c_attn biases).
    Every value is type- and range-checked (`claims.ConfigValues`, errors name `where` and the
    key); settings the book's model cannot express are refused rather than silently ignored."""
    v = ConfigValues(hf, where)
    if v.name("model_type", "gpt2") != "gpt2":
        raise WeightsError(f"{where}: model_type is {hf['model_type']!r}, not 'gpt2'")
    emb, heads = v.int("n_embd"), v.int("n_head")
    v.divides("n_embd", "n_head", emb, heads)
    context = v.int("n_positions", None) or v.int("n_ctx")
    v.dtype()
    v.int("n_ctx", None)
    v.token_ids()
    v.unused(flags=("tie_word_embeddings", "use_cache"), numbers=("initializer_range",),
             probabilities=("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"))
    unsupported = {"activation_function": (v.name("activation_function", "gelu_new"),
                                           ("gelu_new", "gelu_pytorch_tanh")),
                   "n_inner": (v.int("n_inner", None), (None, 4 * emb)),
                   "layer_norm_epsilon": (v.number("layer_norm_epsilon", 1e-5), (1e-5,)),
                   "scale_attn_weights": (v.flag("scale_attn_weights", True), (True,)),
                   "scale_attn_by_inverse_layer_idx":
                       (v.flag("scale_attn_by_inverse_layer_idx", False), (False,))}
    for key, (value, ok) in unsupported.items():
        if value not in ok:
            raise WeightsError(f"{where}: {key}={value!r} is not supported by the book's GPTModel "
                               f"(supported: {', '.join(map(repr, ok))})")
    return validate_config({"vocab_size": v.int("vocab_size"), "context_length": context,
                            "emb_dim": emb, "n_heads": heads, "n_layers": v.int("n_layer"),
                            "drop_rate": drop_rate, "qkv_bias": True}, where=where)


def cfg_to_hf_config(cfg: dict, tied: bool) -> dict:
    """The book's cfg -> a config.json that transformers' GPT2LMHeadModel accepts."""
    hf = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
          "vocab_size": cfg["vocab_size"], "n_positions": cfg["context_length"],
          "n_ctx": cfg["context_length"], "n_embd": cfg["emb_dim"], "n_layer": cfg["n_layers"],
          "n_head": cfg["n_heads"], "n_inner": None, "activation_function": "gelu_new",
          "layer_norm_epsilon": 1e-5, "resid_pdrop": cfg["drop_rate"],
          "embd_pdrop": cfg["drop_rate"], "attn_pdrop": cfg["drop_rate"],
          "initializer_range": 0.02, "scale_attn_weights": True,
          "tie_word_embeddings": bool(tied), "torch_dtype": "float32"}
    eot = 50256 if cfg["vocab_size"] > 50256 else None  # GPT-2's <|endoftext|>, if in vocab
    hf.update(bos_token_id=eot, eos_token_id=eot)
    return hf


def _layers(template: str, n_layers: int) -> list:
    """The layer indices a table row applies to: 0..n_layers-1 for per-block names, else [None]."""
    return list(range(n_layers)) if "{i}" in template else [None]


def _hf_shapes(cfg: dict) -> dict:
    """{HF name: expected shape} for a cfg, from the table's shape column."""
    E = cfg["emb_dim"]
    dims = {"V": cfg["vocab_size"], "C": cfg["context_length"], "E": E, "3E": 3 * E, "4E": 4 * E}
    return {name: tuple(dims[d] for d in shape)
            for hf, _, _, shape in HF_TO_BOOK for name in
            (hf.format(i=i) for i in _layers(hf, cfg["n_layers"]))}


def _book_shapes(cfg: dict) -> dict:
    """{book name: expected shape} for a cfg: the HF shapes through the table's "how" column."""
    hf_shapes, out = _hf_shapes(cfg), {}
    for hf, ours, how, _ in HF_TO_BOOK:
        for i in _layers(hf, cfg["n_layers"]):
            shape = hf_shapes[hf.format(i=i)]
            if how == "copy":
                out[ours.format(i=i)] = shape
            elif how == "T":
                out[ours.format(i=i)] = shape[::-1]
            elif len(shape) == 2 or cfg["qkv_bias"]:  # "qkv": one third, transposed
                for part in QKV:
                    out[ours.format(i=i, qkv=part)] = (shape[:-1] + (shape[-1] // 3,))[::-1]
    return out


# --- state-dict conversion ---------------------------------------------------------------
def check_claims(shapes: dict, cfg: dict, book_names: bool = False, claim=None) -> None:
    """The config's sizes against the tensors' shapes, before any table is made per claimed
    layer: the block count against the block numbers in the names, vocab_size, context_length
    and emb_dim against the embeddings. `claim` = (where the config came from, {cfg key: its
    name there}); the WeightsError names both."""
    where, keys = claim or ("the config", BOOK_KEYS)
    check_layer_count(cfg["n_layers"], count_layers(shapes, BLOCKS[book_names]), keys["n_layers"], where)
    for key, (tensor, axis) in SIZE_TENSORS[book_names].items():
        shape = tuple(shapes.get(tensor, ()))
        if len(shape) == 2:
            claim_matches(keys[key], cfg[key], tensor, shape, shape[axis], where)


def check_shapes(shapes: dict, cfg: dict, book_names: bool = False, claim=None) -> None:
    """Check {name: shape} (Hugging Face names, or the book's with `book_names`) against `cfg`
    before anything is allocated: first the sizes the config claims (`check_claims`), then one
    WeightsError lists missing names, unexpected names and every shape the config contradicts."""
    check_claims(shapes, cfg, book_names, claim)
    expected = _book_shapes(cfg) if book_names else _hf_shapes(cfg)
    optional, ignored = ({"out_head.weight"}, IGNORED_BOOK) if book_names else (OPTIONAL_HF, IGNORED_HF)
    missing = [n for n in expected if n not in shapes and n not in optional]
    unexpected = [n for n in shapes if n not in expected and not ignored.fullmatch(n)]
    wrong = [f"{n} has shape {tuple(shapes[n])} but the config implies {shape}"
             for n, shape in expected.items() if n in shapes and tuple(shapes[n]) != shape]
    problems = ([f"missing: {', '.join(missing)}"] if missing else []) + \
               ([f"unexpected: {', '.join(unexpected)}"] if unexpected else []) + wrong
    if problems:
        summary = (f"vocab_size={cfg['vocab_size']} context_length={cfg['context_length']} "
                   f"emb_dim={cfg['emb_dim']} n_layers={cfg['n_layers']}")
        raise WeightsError(f"GPT-2 weights do not match the config ({summary}): " + "; ".join(problems))


def strip_prefix(hf_sd: dict) -> dict:
    """transformers >= 4.x writes 'transformer.h.0...'; the original files say 'h.0...'."""
    return {k.removeprefix("transformer."): v for k, v in hf_sd.items()}


def _to_book(hf_sd: dict, cfg: dict, claim=None) -> dict:
    """HF GPT-2 state dict (checked) -> book state dict. Transposes are views: the copy into the
    model happens one tensor at a time (see `_build`), so gpt2-xl never exists twice in memory."""
    check_shapes({n: np.shape(v) for n, v in hf_sd.items()}, cfg, claim=claim)
    book = {}
    for hf, ours, how, _ in HF_TO_BOOK:
        for i in _layers(hf, cfg["n_layers"]):
            name = hf.format(i=i)
            if name not in hf_sd:
                continue  # only the optional lm_head.weight gets here
            w = np.asarray(hf_sd[name])
            if how == "copy":
                book[ours.format(i=i)] = w
            elif how == "T":
                book[ours.format(i=i)] = w.T                             # (in, out) -> (out, in)
            else:  # "qkv": (E, 3E) or (3E,) -> three (E, E) Linear weights or (E,) biases
                for part, chunk in zip(QKV, np.split(w, 3, axis=-1)):
                    book[ours.format(i=i, qkv=part)] = chunk.T
    return book


def _to_hf(book_sd: dict, cfg: dict, tied: bool) -> dict:
    """Book state dict -> HF GPT-2 state dict (the exact inverse of `_to_book`). A model built
    with qkv_bias=False gets zero c_attn biases, which compute the same function."""
    hf_sd = {}
    for hf, ours, how, _ in HF_TO_BOOK:
        if hf == "lm_head.weight" and tied:
            continue
        for i in _layers(hf, cfg["n_layers"]):
            name = hf.format(i=i)
            if how == "copy":
                hf_sd[name] = book_sd[ours.format(i=i)]
            elif how == "T":
                hf_sd[name] = book_sd[ours.format(i=i)].T  # (out, in) -> (in, out), a view
            else:
                parts = [book_sd.get(ours.format(i=i, qkv=p)) for p in QKV]
                if parts[0] is None:  # qkv_bias=False
                    parts = [np.zeros(cfg["emb_dim"], np.float32)] * 3
                hf_sd[name] = np.concatenate([p.T for p in parts], axis=-1)
    return hf_sd


def infer_cfg(book_sd: dict, n_heads: int = None, drop_rate: float = 0.0) -> dict:
    """The book's cfg from a book-named state dict's shapes. n_heads cannot be seen in shapes:
    pass it, or it defaults to GPT-2's for that emb_dim (768: 12, 1024: 16, 1280: 20, 1600: 25)."""
    return _cfg_from_shapes(book_sd, "tok_emb.weight", "pos_emb.weight", BLOCKS[True],
                            "trf_blocks.0.att.W_query.bias" in book_sd, n_heads, drop_rate)


def _cfg_from_shapes(sd, tok_name, pos_name, block_prefix, qkv_bias, n_heads, drop_rate) -> dict:
    if tok_name not in sd or pos_name not in sd:
        raise WeightsError(f"cannot infer the config: {tok_name} / {pos_name} are missing")
    for name in (tok_name, pos_name):
        if np.ndim(sd[name]) != 2:
            raise WeightsError(f"cannot infer the config: {name} has shape {np.shape(sd[name])}, "
                               f"expected (rows, emb_dim)")
    vocab, emb = sd[tok_name].shape
    layers = count_layers(sd, block_prefix)
    if layers != list(range(len(layers))):
        raise WeightsError(f"cannot infer the config: transformer block numbers {layers} have gaps")
    if n_heads is None:
        if emb not in HEADS_BY_EMB:
            raise WeightsError(f"emb_dim {emb} is not a GPT-2 size, so n_heads cannot be guessed "
                               f"from the shapes: pass n_heads=... (or config=...)")
        n_heads = HEADS_BY_EMB[emb]
    return validate_config({"vocab_size": vocab, "context_length": sd[pos_name].shape[0],
                            "emb_dim": emb, "n_heads": n_heads, "n_layers": len(layers),
                            "drop_rate": drop_rate, "qkv_bias": qkv_bias})


def _read_config(config, drop_rate: float) -> tuple:
    """`config` (a path to config.json, a HF config dict or a book cfg dict, or None) -> (book
    cfg, (where it came from, {cfg key: its name there}) for `check_claims`), or (None, None)."""
    if config is None:
        return None, None
    where = "config"
    if isinstance(config, (str, os.PathLike)):
        where, config = str(config), read_json_config(config)
    if not isinstance(config, dict):
        raise InputError(f"config must be a path to config.json or a dict, got {type(config).__name__}")
    if "emb_dim" in config:
        return validate_config({"drop_rate": drop_rate, **config}, where=where), (where, BOOK_KEYS)
    return hf_config_to_cfg(config, drop_rate, where), (where, HF_KEYS)


def _build(cfg: dict, book_sd: dict, tie_weights, dtype) -> GPTModel:
    """GPTModel(cfg) loaded from a book state dict. Tied when the weights carry no separate
    out_head, or when `tie_weights=True` (then out_head must equal tok_emb if present)."""
    head, emb = book_sd.get("out_head.weight"), book_sd["tok_emb.weight"]
    if tie_weights is None:
        tie_weights = head is None
    if head is None and not tie_weights:
        book_sd = {**book_sd, "out_head.weight": emb}  # untied copy of the tied head
    model = GPTModel({**cfg, "tie_weights": bool(tie_weights)})
    if np.dtype(dtype) != np.float32:
        model.to(dtype)
    try:
        model.load_state_dict({k: v for k, v in book_sd.items() if not IGNORED_BOOK.fullmatch(k)})
    except ValueError as e:
        raise WeightsError(str(e)) from None
    for p in model.parameters():  # copies of transposed views may be Fortran-ordered
        if not p.data.flags.c_contiguous:
            p.data = np.ascontiguousarray(p.data)
    return model.eval()


def load_gpt2(source, *, config=None, n_heads: int = None, drop_rate: float = 0.0,
              tie_weights: bool = None, dtype=np.float32, cache_dir=None, endpoint: str = None,
              progress: bool = True) -> GPTModel:
    """A GPTModel (in eval mode) with GPT-2 weights from `source`:

    * a model name: "gpt2-small (124M)", "gpt2-medium (355M)", "gpt2-large (774M)",
      "gpt2-xl (1558M)" or a short form ("124M", "gpt2", "gpt2-medium", ...), downloaded once
      into the cache (`cache_dir`, else $TINYGPT_HOME, else ~/.cache/tinygpt) from `endpoint`;
    * a directory in the Hugging Face layout: config.json + model.safetensors;
    * a .safetensors file with Hugging Face names (`config=` a config.json path or dict; without
      it the config is read from the shapes);
    * a .pth/.pt/.bin PyTorch file (read without torch): the book's `model.state_dict()` (or a
      dict with "model_state_dict") or a Hugging Face pytorch_model.bin. The config comes from
      `config=` or the shapes; `n_heads` (not visible in shapes) defaults to GPT-2's for the
      embedding size.

    `tie_weights=None` ties out_head to tok_emb exactly when the file stores no separate head.
    Raises WeightsError naming every missing/unexpected tensor and every shape the config
    contradicts."""
    path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    given = _read_config(config, drop_rate)  # (cfg, claim), or (None, None)
    if path is not None and path.exists():
        return _load_local(path, given, n_heads, drop_rate, tie_weights, dtype)
    if resolve_model_name(source) is None:
        raise MissingFileError(f"{source!r} is neither a file, a directory, nor a GPT-2 model "
                               f"name (gpt2-small (124M), gpt2-medium (355M), ...)")
    path = download_gpt2(source, cache_dir=cache_dir, endpoint=endpoint, progress=progress)
    try:
        return _load_local(path, given, n_heads, drop_rate, tie_weights, dtype)
    except InputError as e:
        if given[0] is not None:  # the caller's config may be what does not fit
            raise
        # the cached copy was checked when downloaded, so it was damaged since: say how to refetch
        name = resolve_model_name(source)
        raise WeightsError(f"the cached {name} in {gpt2_dir(name, cache_dir)} does not load ({e}). "
                           f"Fetch it again: `tinygpt download {GPT2_REPOS[name]} --force`, "
                           f"or download_gpt2({name!r}, force=True)") from None


def _load_local(path: Path, given: tuple, n_heads, drop_rate, tie_weights, dtype) -> GPTModel:
    """load_gpt2 for a directory or file (`given`: the caller's (cfg, claim), or (None, None)):
    read, check the config's sizes and then every name and shape against it, then build. The
    tensors are memory-mapped (safetensors) or read (PyTorch): memory follows the file."""
    cfg, claim = given
    if path.is_dir():
        files = path / "model.safetensors", path / "config.json"
        for f in files if cfg is None else files[:1]:
            if not f.exists():
                raise MissingFileError(f"{path} is not a Hugging Face GPT-2 directory: {f.name} "
                                       f"is missing")
        if cfg is None:
            cfg, claim = _read_config(files[1], drop_rate)
        path = files[0]
    state = _read_state(path)
    if "tok_emb.weight" in state:  # the book's names
        cfg = cfg or infer_cfg(state, n_heads, drop_rate)
        check_shapes({k: v.shape for k, v in state.items()}, cfg, book_names=True, claim=claim)
        return _build(cfg, state, tie_weights, dtype)
    hf_sd = strip_prefix(state)
    cfg = cfg or _cfg_from_shapes(hf_sd, "wte.weight", "wpe.weight", BLOCKS[False], True,
                                  n_heads, drop_rate)
    book_sd = _to_book(hf_sd, cfg, claim)
    if "out_head.weight" in book_sd and np.array_equal(book_sd["out_head.weight"],
                                                       book_sd["tok_emb.weight"]):
        del book_sd["out_head.weight"]  # lm_head saved alongside wte but identical: tied
    return _build(cfg, book_sd, tie_weights, dtype)


def _read_state(path: Path) -> dict:
    """{name: ndarray} from a .safetensors or PyTorch file (the book's checkpoint dict unwrapped).
    Names must be strings; entries that are not arrays are dropped (a missing tensor is then
    reported by the shape check)."""
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    if path.suffix not in (".pth", ".pt", ".bin"):
        raise InputError(f"{path}: expected a directory, .safetensors, .pth, .pt or .bin file")
    state = load_torch_state_dict(path)
    if isinstance(state, dict) and "model_state_dict" in state:  # the book's checkpoint dict
        state = state["model_state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    odd = [repr(k) for k in state if not isinstance(k, str)]
    if odd:
        raise WeightsError(f"{path}: the state dict has keys {', '.join(odd[:5])}, not tensor names")
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}


def save_pretrained(model: GPTModel, save_directory, dtype=np.float32) -> Path:
    """Write `model` in the Hugging Face layout -- config.json + model.safetensors with GPT-2's
    names (Conv1D layout, fused c_attn) -- so `transformers.GPT2LMHeadModel.from_pretrained(dir)`
    opens it. A tied model omits lm_head.weight (tie_word_embeddings=true); an untied one (the
    book trains out_head separately) writes it. Both files are written atomically."""
    cfg = model.cfg
    tied = bool(getattr(model, "weights_tied", False))
    book_sd = {k: np.asarray(v, dtype=dtype) for k, v in model.state_dict().items()
               if not IGNORED_BOOK.fullmatch(k)}
    hf_sd = {f"transformer.{k}" if k != "lm_head.weight" else k: v
             for k, v in _to_hf(book_sd, cfg, tied).items()}
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(hf_sd, out / "model.safetensors", metadata={"format": "pt"})
    hf_config = {**cfg_to_hf_config(cfg, tied), "torch_dtype": np.dtype(dtype).name}
    with atomic_write(out / "config.json", "w", encoding="utf-8") as f:
        json.dump(hf_config, f, indent=2)
        f.write("\n")
    return out
