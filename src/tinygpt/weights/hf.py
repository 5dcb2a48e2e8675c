"""`load_pretrained(path)`: a Hugging Face model directory -> the tinygpt model its config names.
A Hub name ("Qwen/Qwen3-0.6B") is first downloaded once into the cache (`hub.download_model`).

`model_type` picks the class: "gpt2" -> GPTModel (through `load_gpt2`, its checks kept), "qwen3"
-> Qwen3Model, "llama" -> Llama3Model, "gemma3_text" -> Gemma3Model, "gemma3" (4B and up, with a
vision tower) -> the Gemma3Model of its text model, "olmo3" -> Olmo3Model, "qwen3_moe" ->
Qwen3MoeModel. The Hugging Face names map to the book's by one table per family (hf_names.py:
HF_TO_BOOK for Qwen3 and Llama, GEMMA3_HF_TO_BOOK, OLMO3_HF_TO_BOOK, QWEN3_MOE_HF_TO_BOOK);
Linear weights are already (out, in): no transpose.

Order of work, so that a bad directory costs nothing and a good one little memory:
1. config.json -> the book's cfg: every value type- and range-checked (`claims.ConfigValues`),
   unsupported variants (biases, another RoPE scaling) refused by name;
2. every safetensors header (one file, or the shards the index's weight_map names, each a
   .safetensors file in the folder) -> the sizes the config claims checked against them, each
   refusal naming its key (`check_claims`: the layer count against the block numbers in the
   names, before any table is made per claimed layer), then every tensor's name, dtype and shape
   against the shapes the cfg implies, all problems in one WeightsError;
3. the model is built, then each tensor is read from its file straight into its parameter (bf16
   widened to float32 a slice at a time). Plain reads rather than a memory map: mapped pages
   stay resident after they are copied, so peak RSS would approach twice the model
   (tests/test_load_pretrained.py measures the peak against the model's size).

`save_pretrained_hf(model, directory)` writes the same layout back (float32), for transformers.
"""
import json
from pathlib import Path

import numpy as np

from ..model.gemma3 import Gemma3Model
from ..model.llama3 import Llama3Model
from ..model.moe import Qwen3MoeModel
from ..model.olmo3 import Olmo3Model
from ..nn import skip_init
from ..model.qwen3 import Qwen3Model
from .download import resolve_model_name
from .claims import (ConfigValues, WeightsError, check_layer_count, claim_matches, count_layers,
                     read_json_config, shard_names)
from .gpt2 import load_gpt2
from .hf_names import (GEMMA3_HF_TO_BOOK, HF_TO_BOOK, OLMO3_HF_TO_BOOK, QWEN3_MOE_HF_TO_BOOK,
                       attention_sizes, expected_shapes, gemma3_config_to_cfg, gemma3_text_config,
                       gemma3_text_tensors, hybrid_hf_config, olmo3_config_to_cfg,
                       qwen3_moe_config, qwen3_moe_hf_keys)
from .hub import download_model, is_repo_id
from .safetensors_io import bf16_to_float32, read_header, save_safetensors
from ..quant import (FORMATS, SCALES, QuantError, QuantWeight, check_bf16_entries, q8_from_entries,
                     quantize as quantize_model, weights_format)
from ..errors import MissingFileError
from ..files import atomic_write

# model_type -> (class, the name of its norms' parameter, its name table)
MODELS = {"qwen3": (Qwen3Model, "scale", HF_TO_BOOK), "llama": (Llama3Model, "weight", HF_TO_BOOK),
          "gemma3_text": (Gemma3Model, "scale", GEMMA3_HF_TO_BOOK),
          "olmo3": (Olmo3Model, "weight", OLMO3_HF_TO_BOOK),
          "qwen3_moe": (Qwen3MoeModel, "scale", QWEN3_MOE_HF_TO_BOOK)}
SAVABLE = (Qwen3Model, Llama3Model, Gemma3Model, Olmo3Model, Qwen3MoeModel)  # save_pretrained_hf
READABLE = {"F32", "F64", "F16", "BF16"}
CHUNK_ELEMENTS = 1 << 22  # bf16/f16 are widened this many values at a time


def load_pretrained(path, *, dtype=np.float32, quantize=None, cache_dir=None, endpoint=None,
                    progress=True):
    """The model in Hugging Face directory `path` (config.json + model.safetensors, or the sharded
    form with model.safetensors.index.json), in eval mode, parameters in `dtype` (float32 or
    float64; bf16 and f16 weights are widened). A GPT-2 model name ("gpt2-small (124M)", "gpt2",
    ...) goes to `load_gpt2`, which downloads it once; any other Hub repository id
    ("Qwen/Qwen3-0.6B", "meta-llama/Llama-3.2-1B-Instruct") is downloaded once by
    `tinygpt.weights.hub.download_model` (`HF_TOKEN` for gated ones) into `cache_dir`. Raises
    WeightsError naming every missing, unexpected or mis-shaped tensor, or the config entry
    tinygpt does not support.

    dtype="bf16" keeps the weights as bf16 and quantize="q8" as 8-bit blocks (tinygpt.quant), for
    generating: Qwen3/Llama weights go from the file straight into that form, one tensor at a
    time (no float32 copy of the model); GPT-2 is loaded in float32, then quantized. A folder
    written by `tinygpt quantize` loads as the q8 or bf16 it holds, without converting again."""
    fmt = weights_format(dtype, quantize)
    if fmt is not None:
        dtype = np.float32
    if not Path(path).exists() and resolve_model_name(path) is not None:
        given = {"cache_dir": cache_dir, "endpoint": endpoint, "progress": None if progress else False}
        model = load_gpt2(path, dtype=dtype, **{k: v for k, v in given.items() if v is not None})
        return model if fmt is None else quantize_model(model, fmt)
    if not Path(path).exists() and is_repo_id(path):
        path = download_model(path, cache_dir=cache_dir, endpoint=endpoint, progress=progress)
    path = Path(path)
    if not (path / "config.json").is_file():
        raise MissingFileError(f"{path} is not a Hugging Face model directory (config.json is "
                               f"missing), a GPT-2 model name nor a Hub repository id (owner/name)")
    config = read_json_config(path / "config.json")
    model_type = ConfigValues(config, path / "config.json").name("model_type", None)
    if model_type == "gpt2":
        model = load_gpt2(path, dtype=dtype)
        return model if fmt is None else quantize_model(model, fmt)
    multimodal = model_type == "gemma3"  # the text model of Gemma 3 4B and up, without vision
    if multimodal:
        config, model_type = gemma3_text_config(config, path / "config.json"), "gemma3_text"
    if model_type not in MODELS:
        raise WeightsError(f"{path / 'config.json'}: model_type {model_type!r} is not supported "
                           f"(gpt2, gemma3, {', '.join(MODELS)})")
    cls, norm, table = MODELS[model_type]
    cfg = hf_config_to_cfg(config, model_type, path / "config.json")
    tensors = _tensor_index(path)                       # {HF name: (file, header entry)}
    if multimodal:
        tensors = gemma3_text_tensors(tensors)          # the text model's, under its own names
    saved = _saved_format(tensors, fmt, path)           # "q8"/"bf16": a `tinygpt quantize` folder
    scales = _q8_scales(tensors, path) if saved == "q8" else {}
    check_claims(tensors, cfg, path / "config.json", per_head_qk_norm=model_type != "olmo3")
    names = _check_tensors(tensors, cfg, norm, path, table,  # {HF name: book name}
                           READABLE | ({"I8"} if saved == "q8" else set()))
    with skip_init():  # every parameter is read below: drawing them first would waste time
        model = cls(cfg)
    if fmt or saved:
        return _load_quantized(model, names, tensors, scales, fmt or saved).eval()
    if np.dtype(dtype) != model.tok_emb.weight.dtype:
        with np.errstate(invalid="ignore"):  # casting the unset values, all read again below
            model.to(dtype)
    params = dict(model.named_parameters(remove_duplicate=False))
    for hf_name, book_name in names.items():
        file, entry, start = tensors[hf_name]
        _read_into(params[book_name].data, file, entry, start)
    return model.eval()


def _saved_format(tensors: dict, fmt, path):
    """"q8" or "bf16" when the files were written by `tinygpt quantize` (their metadata says so),
    else None; a QuantError when a q8 folder is asked for as bf16 or a bf16 folder holds a weight
    matrix that is not BF16."""
    files = {file for file, _, _ in tensors.values()}
    saved = {read_header(file)[1].get("tinygpt_quantization") for file in files} - {None}
    if not saved:
        return None
    if len(saved) > 1 or not saved <= set(FORMATS):
        raise QuantError(f"{path}: the files say they hold {sorted(saved)} weights; tinygpt reads "
                         f"{' or '.join(FORMATS)}")
    saved = saved.pop()
    if saved == "q8" and fmt == "bf16":
        raise QuantError(f"{path} holds q8 weights (written by tinygpt quantize): load it without "
                         f"--dtype bf16")
    if saved == "bf16":
        check_bf16_entries(tensors, path)
    return saved


def _q8_scales(tensors: dict, path) -> dict:
    """Take the scale tensors out of `tensors` -> {weight name: scale (file, entry, start)},
    each weight's int8 data and scales checked (q8_from_entries)."""
    scales = {n[:-len(SCALES)]: tensors.pop(n) for n in list(tensors) if n.endswith(SCALES)}
    for name, (file, entry, _) in tensors.items():
        if entry["tag"] == "I8" or name in scales:
            q8_from_entries(name, entry, scales[name][1] if name in scales else None, file)
    orphans = [n for n in scales if n not in tensors]
    if orphans:
        raise QuantError(f"{path}: scales for tensors the files do not hold: {orphans[:5]}")
    return scales


def _load_quantized(model, names: dict, tensors: dict, scales: dict, fmt: str):
    """Read each Linear/Embedding weight straight into its quantized form (bf16 bits kept, q8
    quantized a chunk of rows at a time or read as saved), then the small float tensors."""
    hf_of = {book: hf for hf, book in names.items()}
    if "out_head.weight" not in hf_of:  # tied: the head is the embedding
        hf_of["out_head.weight"] = "model.embed_tokens.weight"

    def source(book_name):
        file, entry, start = tensors[hf_of[book_name]]
        if entry["tag"] == "BF16" and fmt == "bf16" or entry["tag"] == "I8":  # kept as stored
            raw = np.empty(entry["shape"], entry["dtype"])
            _read_into(raw, file, entry, start)
            if entry["tag"] == "BF16":
                return QuantWeight("bf16", raw)
            s_file, s_entry, s_start = scales[hf_of[book_name]]
            s = np.empty(s_entry["shape"], np.float32)
            _read_into(s, s_file, s_entry, s_start)
            return QuantWeight("q8", raw, s)
        return QuantWeight.from_rows(entry["shape"], fmt,  # converted a chunk of rows at a time
                                     lambda r0, r1: _read_rows(file, entry, start, r0, r1))

    quantize_model(model, fmt, source)
    params = dict(model.named_parameters(remove_duplicate=False))
    for book_name, hf_name in hf_of.items():
        if book_name in params:                     # norms (the rest are quantized now)
            _read_into(params[book_name].data, *tensors[hf_name])
    return model


def hf_config_to_cfg(config: dict, model_type: str, where) -> dict:
    """A Qwen3, Llama or Gemma 3 config.json -> the book's cfg (+ tie_weights and norm_eps). Every
    value is type- and range-checked first (`claims.ConfigValues`): a WeightsError names the key."""
    if model_type == "qwen3_moe":
        return {**hf_config_to_cfg(config, "qwen3", where), **qwen3_moe_config(config, where)}
    if model_type in ("gemma3_text", "olmo3"):
        return (gemma3_config_to_cfg if model_type == "gemma3_text" else olmo3_config_to_cfg)(config, where)
    v = ConfigValues(config, where)
    for flag in ("attention_bias", "mlp_bias", "use_sliding_window"):
        if v.flag(flag, False):
            raise WeightsError(f"{where}: {flag}=true is not supported by {model_type} in tinygpt")
    if v.name("hidden_act", "silu") != "silu":
        raise WeightsError(f"{where}: hidden_act {config['hidden_act']!r} is not supported (silu)")
    v.dtype()
    v.unused(flags=("use_cache",), counts=("sliding_window", "max_window_layers"),
             numbers=("initializer_range",), probabilities=("attention_dropout",))
    emb, heads, head_dim, kv_heads = attention_sizes(v)
    cfg = {"vocab_size": v.int("vocab_size"), "context_length": v.int("max_position_embeddings"),
           "emb_dim": emb, "n_heads": heads, "n_layers": v.int("num_hidden_layers"),
           "hidden_dim": v.int("intermediate_size"), "head_dim": head_dim, "n_kv_groups": kv_heads,
           "norm_eps": v.number("rms_norm_eps", 1e-6), "tie_weights": v.flag("tie_word_embeddings", False)}
    return {**cfg, **_rope(v, model_type, where)}


def _rope(v: ConfigValues, model_type: str, where) -> dict:
    """rope_base (and Llama 3's rope_freq) from rope_scaling (transformers 4) and rope_parameters
    (transformers 5, which wins), or a top-level rope_theta."""
    tables = [t for t in (v.table("rope_scaling"), v.table("rope_parameters")) if t is not None]

    def holder(key):  # the table that gives `key`, the later one first
        return next((t for t in reversed(tables) if t.config.get(key) is not None), None)

    out = {"rope_base": (holder("rope_theta") or v).number("rope_theta")}
    kind = holder("rope_type") or holder("type")  # "type": the older spelling
    rope_type = "default" if kind is None else kind.name(
        "rope_type" if kind.config.get("rope_type") is not None else "type")
    if rope_type == "llama3" and model_type == "llama":
        low, high = kind.number("low_freq_factor"), kind.number("high_freq_factor")
        if high <= low:
            raise kind.refuse("high_freq_factor", f"({high}) must be larger than low_freq_factor ({low})")
        out["rope_freq"] = {"factor": kind.number("factor"), "low_freq_factor": low,
                            "high_freq_factor": high,
                            "original_context_length": kind.int("original_max_position_embeddings")}
    elif rope_type != "default":
        raise WeightsError(f"{where}: RoPE type {rope_type!r} is not supported for {model_type} "
                           f"(default{', llama3' if model_type == 'llama' else ''})")
    return out


def _tensor_index(path: Path) -> dict:
    """{name: (file, header entry, data start)} over model.safetensors or the listed shards."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_config(index).get("weight_map")
        files = shard_names(weight_map, index, path)
    elif (path / "model.safetensors").is_file():
        weight_map, files = None, ["model.safetensors"]
    else:
        raise MissingFileError(f"{path} holds neither model.safetensors nor model.safetensors.index.json")
    tensors = {}
    for name in files:
        file = path / name
        entries, _, start = read_header(file)
        for tensor, entry in entries.items():
            if tensor in tensors:
                raise WeightsError(f"{path}: tensor {tensor!r} is in two shards")
            if weight_map is not None and weight_map.get(tensor) != name:
                raise WeightsError(f"{index}: tensor {tensor!r} is in {name}, the index says "
                                   f"{weight_map.get(tensor)!r}")
            tensors[tensor] = (file, entry, start)
    if weight_map is not None and set(weight_map) - set(tensors):
        raise WeightsError(f"{index}: lists tensors no shard holds: {sorted(set(weight_map) - set(tensors))[:5]}")
    return tensors


def check_claims(tensors: dict, cfg: dict, where, per_head_qk_norm: bool = True) -> None:
    """The config's sizes against the tensor headers, each refusal naming the config key: the
    layer count against the block numbers in the names (before `expected_shapes` makes a row per
    claimed layer), vocab_size and hidden_size against the embedding, the heads, head_dim and
    intermediate_size against layer 0's projections."""
    check_layer_count(cfg["n_layers"], count_layers(tensors, "model.layers."),
                      "num_hidden_layers", where)
    if cfg.get("num_experts"):  # Qwen3 MoE: the experts held, before a table per claimed expert
        check_layer_count(cfg["num_experts"], count_layers(tensors, "model.layers.0.mlp.experts."),
                          "num_experts", where)
    hd = cfg["head_dim"]
    claims = [("model.embed_tokens.weight", 0, "vocab_size", cfg["vocab_size"], 1),
              ("model.embed_tokens.weight", 1, "hidden_size", cfg["emb_dim"], 1),
              ("model.layers.0.self_attn.q_norm.weight" if per_head_qk_norm else "", 0, "head_dim", hd, 1),
              ("model.layers.0.self_attn.q_proj.weight", 1, "hidden_size", cfg["emb_dim"], 1),
              ("model.layers.0.self_attn.q_proj.weight", 0, "num_attention_heads", cfg["n_heads"], hd),
              ("model.layers.0.self_attn.k_proj.weight", 0, "num_key_value_heads", cfg["n_kv_groups"], hd),
              ("model.layers.0.mlp.gate_proj.weight", 0, "intermediate_size", cfg["hidden_dim"], 1),
              ("model.layers.0.mlp.experts.0.gate_proj.weight", 0, "moe_intermediate_size",
               cfg.get("moe_intermediate_size"), 1)]
    for tensor, axis, key, claimed, per in claims:
        shape = tensors[tensor][1]["shape"] if tensor in tensors else ()
        if len(shape) > axis:
            implied = shape[axis] // per if shape[axis] % per == 0 else f"{shape[axis]}/{per}"
            claim_matches(key, claimed, tensor, shape, implied, where,
                          f" of head_dim {hd}" if per != 1 else "")


def _check_tensors(tensors: dict, cfg: dict, norm: str, path, table=None, readable=READABLE) -> dict:
    want = expected_shapes(cfg, norm, table)
    problems = [f"missing {n}" for n in want if n not in tensors]
    for name, (file, entry, _) in tensors.items():
        if name not in want:
            if not (name == "lm_head.weight" and cfg["tie_weights"]):  # a tied head saved anyway
                problems.append(f"unexpected {name} ({file.name})")
            continue
        if entry["shape"] != want[name][1]:
            problems.append(f"{name}: shape {entry['shape']} in {file.name}, the config implies {want[name][1]}")
        if entry["tag"] not in readable:
            problems.append(f"{name}: dtype {entry['tag']} is not a float dtype")
    if problems:
        raise WeightsError(f"{path}: the weights do not fit the config: {'; '.join(problems[:20])}"
                           + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""))
    return {hf: book for hf, (book, _) in want.items()}


def _read_into(out: np.ndarray, file: Path, entry: dict, start: int) -> None:
    """Fill `out` with the tensor `entry` of `file`: read straight into it when the dtypes agree,
    else CHUNK_ELEMENTS values at a time through a small buffer."""
    if not out.flags.c_contiguous:
        raise WeightsError(f"{file}: a parameter to load into is not C-contiguous")
    flat = out.reshape(-1)                                    # a view of the parameter
    with open(file, "rb") as f:
        f.seek(start + entry["begin"])
        if entry["dtype"] == out.dtype:
            if f.readinto(memoryview(flat).cast("B")) != flat.nbytes:
                raise WeightsError(f"{file}: short read of a tensor")
            return
        for lo in range(0, flat.size, CHUNK_ELEMENTS):
            n = min(CHUNK_ELEMENTS, flat.size - lo)
            raw = np.fromfile(f, dtype=entry["dtype"], count=n)
            if raw.size != n:
                raise WeightsError(f"{file}: short read of a tensor")
            flat[lo:lo + n] = bf16_to_float32(raw) if entry["tag"] == "BF16" else raw


def _read_rows(file: Path, entry: dict, start: int, r0: int, r1: int) -> np.ndarray:
    """Rows [r0, r1) of the 2-D tensor `entry` of `file`, in the file's dtype (BF16: uint16)."""
    width = entry["shape"][1]
    with open(file, "rb") as f:
        f.seek(start + entry["begin"] + r0 * width * entry["dtype"].itemsize)
        raw = np.fromfile(f, dtype=entry["dtype"], count=(r1 - r0) * width)
    if raw.size != (r1 - r0) * width:
        raise WeightsError(f"{file}: short read of a tensor")
    return raw.reshape(r1 - r0, width)


def cfg_to_hf_config(model) -> dict:
    """The config.json transformers reads for a model `save_pretrained_hf` takes."""
    if isinstance(model, (Gemma3Model, Olmo3Model)):
        return hybrid_hf_config(model, "gemma3_text" if isinstance(model, Gemma3Model) else "olmo3")
    if isinstance(model, Qwen3MoeModel):
        return {**_qwen3_config(model), **qwen3_moe_hf_keys(model.cfg)}
    return _qwen3_config(model)


def _qwen3_config(model) -> dict:
    """Qwen3's or Llama's config.json keys (a Qwen3MoeModel: Qwen3's)."""
    cfg, att = model.cfg, model.trf_blocks[0].att
    model_type = "qwen3" if isinstance(model, (Qwen3Model, Qwen3MoeModel)) else "llama"
    rope = {"rope_type": "default", "rope_theta": cfg["rope_base"]}
    if cfg.get("rope_freq"):
        freq = cfg["rope_freq"]
        rope.update(rope_type="llama3", factor=freq["factor"], low_freq_factor=freq["low_freq_factor"],
                    high_freq_factor=freq["high_freq_factor"],
                    original_max_position_embeddings=freq["original_context_length"])
    return {"architectures": ["Qwen3ForCausalLM" if model_type == "qwen3" else "LlamaForCausalLM"],
            "model_type": model_type, "vocab_size": cfg["vocab_size"],
            "max_position_embeddings": cfg["context_length"], "hidden_size": cfg["emb_dim"],
            "num_attention_heads": cfg["n_heads"], "num_hidden_layers": cfg["n_layers"],
            "intermediate_size": cfg["hidden_dim"], "head_dim": att.head_dim,
            "num_key_value_heads": cfg["n_kv_groups"], "rms_norm_eps": model.final_norm.eps,
            "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": model.weights_tied,
            "rope_parameters": rope, "rope_theta": cfg["rope_base"], "dtype": "float32"}


def save_pretrained_hf(model, save_directory) -> Path:
    """Write a Qwen3Model, Llama3Model, Gemma3Model, Olmo3Model or Qwen3MoeModel as a Hugging Face directory (config.json and
    model.safetensors, float32, Hugging Face names), which `load_pretrained` and transformers'
    `from_pretrained` read. A tied head is stored once, as model.embed_tokens.weight."""
    if not isinstance(model, SAVABLE):
        raise WeightsError(f"save_pretrained_hf takes a {', '.join(c.__name__ for c in SAVABLE)}, got "
                           f"{type(model).__name__} (GPT-2: tinygpt.weights.save_pretrained)")
    directory = Path(save_directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = cfg_to_hf_config(model)
    _, norm, table = MODELS[config["model_type"]]
    want = expected_shapes({**model.cfg, "head_dim": config["head_dim"],
                            "tie_weights": model.weights_tied}, norm, table)
    params = dict(model.named_parameters(remove_duplicate=False))
    save_safetensors({hf: params[book].data.astype(np.float32, copy=False)
                      for hf, (book, _) in want.items()},
                     directory / "model.safetensors", metadata={"format": "pt"})
    with atomic_write(directory / "config.json", "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    return directory
