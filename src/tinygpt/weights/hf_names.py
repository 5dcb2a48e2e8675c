"""The name tables of `load_pretrained` (hf.py): Hugging Face tensor name -> the book's name, one
table per family, the shapes a cfg implies for them, and Gemma 3's config.json -> the book's cfg.

Qwen3 and Llama share HF_TO_BOOK (their Linear weights are already (out, in): no transpose).
Gemma 3 (GEMMA3_HF_TO_BOOK) has the same projections, the book's `blocks` for `trf_blocks`, and
four norms per block under Hugging Face's own names; its RMSNorm weights are zero-centred in both
(the norm scales by 1 + weight), so they are copied as they are. Olmo 3 (OLMO3_HF_TO_BOOK) keeps
two of Gemma's four norms, and its q_norm/k_norm span whole projections.
"""
from ..model.gemma3 import GLOBAL, LOCAL
from .claims import ConfigValues, WeightsError

# Hugging Face name (Qwen3 and Llama)            book name ({norm}: scale for Qwen3, weight for Llama)
HF_TO_BOOK = [
    ("model.embed_tokens.weight",                      "tok_emb.weight"),
    ("model.layers.{i}.self_attn.q_proj.weight",       "trf_blocks.{i}.att.W_query.weight"),
    ("model.layers.{i}.self_attn.k_proj.weight",       "trf_blocks.{i}.att.W_key.weight"),
    ("model.layers.{i}.self_attn.v_proj.weight",       "trf_blocks.{i}.att.W_value.weight"),
    ("model.layers.{i}.self_attn.o_proj.weight",       "trf_blocks.{i}.att.out_proj.weight"),
    ("model.layers.{i}.self_attn.q_norm.weight",       "trf_blocks.{i}.att.q_norm.scale"),
    ("model.layers.{i}.self_attn.k_norm.weight",       "trf_blocks.{i}.att.k_norm.scale"),
    ("model.layers.{i}.mlp.gate_proj.weight",          "trf_blocks.{i}.ff.fc1.weight"),
    ("model.layers.{i}.mlp.up_proj.weight",            "trf_blocks.{i}.ff.fc2.weight"),
    ("model.layers.{i}.mlp.down_proj.weight",          "trf_blocks.{i}.ff.fc3.weight"),
    ("model.layers.{i}.input_layernorm.weight",        "trf_blocks.{i}.norm1.{norm}"),
    ("model.layers.{i}.post_attention_layernorm.weight", "trf_blocks.{i}.norm2.{norm}"),
    ("model.norm.weight",                              "final_norm.{norm}"),
    ("lm_head.weight",                                 "out_head.weight"),
]

# Hugging Face name (Gemma 3)                              book name (ch05/12_gemma3)
GEMMA3_HF_TO_BOOK = [
    ("model.embed_tokens.weight",                          "tok_emb.weight"),
    ("model.layers.{i}.self_attn.q_proj.weight",           "blocks.{i}.att.W_query.weight"),
    ("model.layers.{i}.self_attn.k_proj.weight",           "blocks.{i}.att.W_key.weight"),
    ("model.layers.{i}.self_attn.v_proj.weight",           "blocks.{i}.att.W_value.weight"),
    ("model.layers.{i}.self_attn.o_proj.weight",           "blocks.{i}.att.out_proj.weight"),
    ("model.layers.{i}.self_attn.q_norm.weight",           "blocks.{i}.att.q_norm.scale"),
    ("model.layers.{i}.self_attn.k_norm.weight",           "blocks.{i}.att.k_norm.scale"),
    ("model.layers.{i}.mlp.gate_proj.weight",              "blocks.{i}.ff.fc1.weight"),
    ("model.layers.{i}.mlp.up_proj.weight",                "blocks.{i}.ff.fc2.weight"),
    ("model.layers.{i}.mlp.down_proj.weight",              "blocks.{i}.ff.fc3.weight"),
    ("model.layers.{i}.input_layernorm.weight",            "blocks.{i}.input_layernorm.scale"),
    ("model.layers.{i}.post_attention_layernorm.weight",   "blocks.{i}.post_attention_layernorm.scale"),
    ("model.layers.{i}.pre_feedforward_layernorm.weight",  "blocks.{i}.pre_feedforward_layernorm.scale"),
    ("model.layers.{i}.post_feedforward_layernorm.weight", "blocks.{i}.post_feedforward_layernorm.scale"),
    ("model.norm.weight",                                  "final_norm.scale"),
    ("lm_head.weight",                                     "out_head.weight"),
]

# Olmo 3: Gemma 3's table with the norms of a post-norm block, QK-norm over whole projections
OLMO3_HF_TO_BOOK = [(hf, book.replace(".scale", ".weight")) for hf, book in GEMMA3_HF_TO_BOOK
                    if "input_layernorm" not in hf and "pre_feedforward" not in hf]

# Qwen3 MoE: Qwen3's table with the router and the experts ({e}) in place of the feed-forward
QWEN3_MOE_HF_TO_BOOK = [row for row in HF_TO_BOOK if ".mlp." not in row[0]] + [
    ("model.layers.{i}.mlp.gate.weight",                  "trf_blocks.{i}.ff.gate.weight"),
    ("model.layers.{i}.mlp.experts.{e}.gate_proj.weight", "trf_blocks.{i}.ff.fc1.{e}.weight"),
    ("model.layers.{i}.mlp.experts.{e}.up_proj.weight",   "trf_blocks.{i}.ff.fc2.{e}.weight"),
    ("model.layers.{i}.mlp.experts.{e}.down_proj.weight", "trf_blocks.{i}.ff.fc3.{e}.weight"),
]


def expected_shapes(cfg: dict, norm: str, table=None) -> dict:
    """{HF name: (book name, shape)} that `cfg` implies under `table` (default HF_TO_BOOK;
    lm_head absent when tied, q_norm/k_norm absent without QK-norm; a norm's `.weight` over the
    head is Llama's, absent, or Olmo 3's over the whole projection)."""
    E, V, H, hd = cfg["emb_dim"], cfg["vocab_size"], cfg["n_heads"], cfg["head_dim"]
    shapes = {"tok_emb.weight": (V, E), "W_query.weight": (H * hd, E),
              "W_key.weight": (cfg["n_kv_groups"] * hd, E), "W_value.weight": (cfg["n_kv_groups"] * hd, E),
              "out_proj.weight": (E, H * hd), "q_norm.scale": (hd,), "k_norm.scale": (hd,),
              "q_norm.weight": (H * hd,), "k_norm.weight": (cfg["n_kv_groups"] * hd,),  # Olmo 3
              "fc1.weight": (cfg["hidden_dim"], E), "fc2.weight": (cfg["hidden_dim"], E),
              "fc3.weight": (E, cfg["hidden_dim"]), "out_head.weight": (V, E),
              "gate.weight": (cfg.get("num_experts"), E), "fc1[e]": (cfg.get("moe_intermediate_size"), E),
              "fc2[e]": (cfg.get("moe_intermediate_size"), E), "fc3[e]": (E, cfg.get("moe_intermediate_size"))}
    out = {}
    for hf, book in HF_TO_BOOK if table is None else table:
        if "q_norm" in hf or "k_norm" in hf:
            if not cfg.get("qk_norm", norm == "scale"):
                continue
        if hf == "lm_head.weight" and cfg["tie_weights"]:
            continue
        experts = range(cfg["num_experts"]) if "{e}" in hf else [None]  # Qwen3 MoE's experts
        for i in range(cfg["n_layers"]) if "{i}" in hf else [None]:
            for e in experts:
                name = book.format(i=i, e=e, norm=norm)
                key = book.split(".")[-3] + "[e]" if e is not None else ".".join(name.split(".")[-2:])
                out[hf.format(i=i, e=e)] = (name, shapes.get(key, (E,)))
    return out


def gemma3_config_to_cfg(config: dict, where) -> dict:
    """A Gemma 3 text config.json (model_type gemma3_text) -> Gemma3Model's cfg. Every value is
    type- and range-checked first (`claims.ConfigValues`); variants tinygpt does not compute
    (biases, logit soft-capping, bidirectional attention, another activation) are refused."""
    v = ConfigValues(config, where)
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if v.number(key, None) is not None:
            raise WeightsError(f"{where}: {key} is not supported by gemma3 in tinygpt (null)")
    for key in ("hidden_activation", "hidden_act"):
        v.name(key, None, choices={"gelu_pytorch_tanh"})
    cfg = {**_sizes(v, where, "gemma3", ("attention_bias", "use_bidirectional_attention"), 6),
           "query_pre_attn_scalar": v.number("query_pre_attn_scalar", 256.0),
           "norm_eps": v.number("rms_norm_eps", 1e-6),
           "tie_weights": v.flag("tie_word_embeddings", True)}
    rope = _hybrid_rope(v, where, "gemma3", v.number("rope_theta", 1_000_000.0),
                        v.number("rope_local_base_freq", 10_000.0), "linear")
    return {**cfg, **rope}


def olmo3_config_to_cfg(config: dict, where) -> dict:
    """An Olmo 3 config.json (model_type olmo3) -> Olmo3Model's cfg, checked as Gemma 3's."""
    v = ConfigValues(config, where)
    v.name("hidden_act", None, choices={"silu"})
    cfg = {**_sizes(v, where, "olmo3", ("attention_bias",), 4),
           "norm_eps": v.number("rms_norm_eps", 1e-5),
           "tie_weights": v.flag("tie_word_embeddings", False)}
    theta = v.number("rope_theta", 500_000.0)
    return {**cfg, **_hybrid_rope(v, where, "olmo3", theta, theta, "yarn")}


def attention_sizes(v: ConfigValues) -> tuple:
    """(hidden_size, num_attention_heads, head_dim, num_key_value_heads) of a config, each
    checked, head_dim defaulting to hidden_size / heads; the token ids are checked too."""
    emb, heads = v.int("hidden_size"), v.int("num_attention_heads")
    head_dim = v.int("head_dim", None)
    if head_dim is None:
        v.divides("hidden_size", "num_attention_heads", emb, heads)
        head_dim = emb // heads
    kv_heads = v.int("num_key_value_heads", heads)
    v.divides("num_attention_heads", "num_key_value_heads", heads, kv_heads)
    v.token_ids()
    return emb, heads, head_dim, kv_heads


def _sizes(v: ConfigValues, where, family: str, refused_flags, pattern: int) -> dict:
    """The sizes, the layer kinds and the window of a config with sliding-window layers; the
    `refused_flags` must be false. layer_types stays None when absent: the model builds it
    (every `pattern`-th layer full) once the layer count has been checked against the weights."""
    for flag in refused_flags:
        if v.flag(flag, False):
            raise WeightsError(f"{where}: {flag}=true is not supported by {family} in tinygpt")
    v.dtype()
    v.unused(flags=("use_cache",), numbers=("initializer_range",), probabilities=("attention_dropout",))
    emb, heads, head_dim, kv_heads = attention_sizes(v)
    n_layers = v.int("num_hidden_layers")
    cfg = {"vocab_size": v.int("vocab_size"), "context_length": v.int("max_position_embeddings"),
           "emb_dim": emb, "n_heads": heads, "n_layers": n_layers,
           "hidden_dim": v.int("intermediate_size"), "head_dim": head_dim, "qk_norm": True,
           "n_kv_groups": kv_heads, "sliding_window": v.int("sliding_window"),
           "layer_types": _layer_types(v, n_layers)}
    if cfg["layer_types"] is None:
        cfg["sliding_window_pattern"] = v.int("sliding_window_pattern", None) \
            or v.int("_sliding_window_pattern", pattern)
    return cfg


def _layer_types(v: ConfigValues, n_layers: int):
    """layer_types as given (a list of n_layers layer kinds), or None when absent."""
    kinds = v.config.get("layer_types")
    if kinds is None:
        return None
    if not isinstance(kinds, list) or len(kinds) != n_layers \
            or any(kind not in (LOCAL, GLOBAL) for kind in kinds):
        raise v.refuse("layer_types", f"must be a list of num_hidden_layers ({n_layers}) of "
                                      f"{LOCAL!r} and {GLOBAL!r}, got {str(kinds)[:60]}")
    return kinds


def _hybrid_rope(v: ConfigValues, where, family: str, global_base: float, local_base: float,
                 scaling: str) -> dict:
    """rope_base and rope_local_base, and the full layers' scaling (`scaling`: "linear" for Gemma
    3, "yarn" for Olmo 3), from rope_parameters per layer kind (transformers 5) or, under them,
    the top-level values and rope_scaling (transformers 4)."""
    params = v.table("rope_parameters")
    full = params.table(GLOBAL) if params is not None else None
    local = params.table(LOCAL) if params is not None else None
    out = {"rope_base": global_base, "rope_local_base": local_base}
    if full is not None:
        out["rope_base"] = full.number("rope_theta", out["rope_base"])
    if local is not None:
        out["rope_local_base"] = local.number("rope_theta", out["rope_local_base"])
        if local.name("rope_type", "default") != "default":
            raise WeightsError(f"{where}: RoPE type {local.config['rope_type']!r} of the sliding "
                               f"layers is not supported for {family} (default)")
    kind = full if full is not None and full.config.get("rope_type") is not None \
        else v.table("rope_scaling")
    rope_type = "default" if kind is None else kind.name(
        "rope_type" if kind.config.get("rope_type") is not None else "type", "default")
    if rope_type == scaling == "linear":
        out["rope_linear_factor"] = kind.number("factor")
    elif rope_type == scaling == "yarn":
        out["rope_yarn"] = _yarn(kind)
    elif rope_type != "default":
        raise WeightsError(f"{where}: RoPE type {rope_type!r} is not supported for {family} "
                           f"(default, {scaling})")
    return out


def _yarn(kind: ConfigValues) -> dict:
    for key in ("mscale", "mscale_all_dim"):
        if kind.number(key, None) is not None:
            raise kind.refuse(key, "is not supported by tinygpt's YaRN (attention_factor is)")
    if not kind.flag("truncate", True):
        raise kind.refuse("truncate", "=false is not supported by tinygpt's YaRN")
    return {"factor": kind.number("factor"),
            "original_context_length": kind.int("original_max_position_embeddings"),
            "beta_fast": kind.number("beta_fast", 32.0), "beta_slow": kind.number("beta_slow", 1.0),
            "attention_factor": kind.number("attention_factor", None)}


def hybrid_hf_config(model, model_type: str) -> dict:
    """The config.json (transformers 5 spelling) transformers reads for a Gemma3Model
    ("gemma3_text") or an Olmo3Model ("olmo3")."""
    cfg, gemma = model.cfg, model_type == "gemma3_text"
    full = {"rope_type": "default", "rope_theta": cfg["rope_base"]}
    if cfg.get("rope_linear_factor", 1.0) != 1.0:
        full.update(rope_type="linear", factor=cfg["rope_linear_factor"])
    if cfg.get("rope_yarn"):
        yarn = cfg["rope_yarn"]
        full.update(rope_type="yarn", factor=yarn["factor"], beta_fast=yarn.get("beta_fast", 32.0),
                    beta_slow=yarn.get("beta_slow", 1.0), attention_factor=yarn.get("attention_factor"),
                    original_max_position_embeddings=yarn["original_context_length"])
    local = {"rope_type": "default", "rope_theta": cfg.get("rope_local_base", cfg["rope_base"])}
    config = {"architectures": ["Gemma3ForCausalLM" if gemma else "Olmo3ForCausalLM"],
              "model_type": model_type, "vocab_size": cfg["vocab_size"],
              "max_position_embeddings": cfg["context_length"], "hidden_size": cfg["emb_dim"],
              "num_attention_heads": cfg["n_heads"], "num_hidden_layers": cfg["n_layers"],
              "intermediate_size": cfg["hidden_dim"], "head_dim": cfg["head_dim"],
              "num_key_value_heads": cfg["n_kv_groups"], "rms_norm_eps": model.final_norm.eps,
              "attention_bias": False, "tie_word_embeddings": model.weights_tied,
              "sliding_window": cfg["sliding_window"], "layer_types": list(cfg["layer_types"]),
              "rope_parameters": {GLOBAL: full, LOCAL: local}, "dtype": "float32"}
    if gemma:
        config.update(hidden_activation="gelu_pytorch_tanh", final_logit_softcapping=None,
                      attn_logit_softcapping=None,
                      query_pre_attn_scalar=_int_if_whole(cfg["query_pre_attn_scalar"]))
    else:
        config["hidden_act"] = "silu"
    return config


def qwen3_moe_hf_keys(cfg: dict) -> dict:
    """What a Qwen3 MoE config.json adds to Qwen3's."""
    return {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
            "num_experts": cfg["num_experts"], "num_experts_per_tok": cfg["num_experts_per_tok"],
            "moe_intermediate_size": cfg["moe_intermediate_size"],
            "norm_topk_prob": cfg.get("norm_topk_prob", True), "decoder_sparse_step": 1,
            "mlp_only_layers": []}


def _int_if_whole(x):
    """12.0 -> 12 (transformers' strict config wants an int where the value is whole)."""
    return int(x) if float(x).is_integer() else x


# model_type "gemma3" (4B and up: Gemma3ForConditionalGeneration, the text model beside a vision
# tower): the text model's names under one of these prefixes; the vision weights are not read.
GEMMA3_TEXT_PREFIXES = ("language_model.model.", "model.language_model.")
GEMMA3_VISION_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.",
                          "model.multi_modal_projector.")
# transformers' Gemma3TextConfig defaults, which the released multimodal configs rely on (their
# text_config names only what differs); check_claims still compares every size with the weights
GEMMA3_TEXT_DEFAULTS = {"vocab_size": 262_208, "num_attention_heads": 8, "num_key_value_heads": 4,
                        "head_dim": 256, "max_position_embeddings": 131_072, "sliding_window": 4096,
                        "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-6}


def gemma3_text_config(config: dict, where) -> dict:
    """The text model's config of a model_type "gemma3" config.json: its text_config over the
    defaults above (and the outer tie_word_embeddings)."""
    text = ConfigValues(config, where).table("text_config")
    if text is None:
        raise WeightsError(f"{where}: model_type gemma3 needs a text_config")
    tie = ConfigValues(config, where).flag("tie_word_embeddings", True)
    return {**GEMMA3_TEXT_DEFAULTS, "tie_word_embeddings": tie, **text.config}


def gemma3_text_tensors(tensors: dict) -> dict:
    """{name: entry} of a multimodal Gemma 3's files -> the text model's, under Gemma3ForCausalLM's
    names; the vision tower and projector left out (any other name stays, to be reported)."""
    out = {}
    for name, entry in tensors.items():
        prefix = next((p for p in GEMMA3_TEXT_PREFIXES if name.startswith(p)), None)
        if prefix is not None:
            out["model." + name[len(prefix):]] = entry
        elif name in ("language_model.lm_head.weight", "lm_head.weight"):
            out["lm_head.weight"] = entry
        elif not name.startswith(GEMMA3_VISION_PREFIXES):
            out[name] = entry
    return out


def qwen3_moe_config(config: dict, where) -> dict:
    """The MoE keys of a Qwen3 MoE config.json (model_type qwen3_moe), beside Qwen3's: every
    block must be a MoE block (decoder_sparse_step 1, no mlp_only_layers)."""
    v = ConfigValues(config, where)
    if v.int("decoder_sparse_step", 1) != 1:
        raise v.refuse("decoder_sparse_step", "must be 1 (every block a MoE block) in tinygpt")
    if config.get("mlp_only_layers") not in (None, []):
        raise v.refuse("mlp_only_layers", "must be empty (every block a MoE block) in tinygpt")
    v.unused(flags=("output_router_logits",), numbers=("router_aux_loss_coef",))
    experts = v.int("num_experts", None) or v.int("num_local_experts")
    per_token = v.int("num_experts_per_tok")
    if per_token > experts:
        raise v.refuse("num_experts_per_tok", f"({per_token}) must be at most num_experts ({experts})")
    return {"num_experts": experts, "num_experts_per_tok": per_token,
            "moe_intermediate_size": v.int("moe_intermediate_size"),
            "norm_topk_prob": v.flag("norm_topk_prob", False)}
