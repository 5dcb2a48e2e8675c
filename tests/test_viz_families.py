"""The attention inspector (`tinygpt.viz.attention_weights`, `inspect_position`) on every family
the CLI serves, the book-shaped model and `for_inference(model)` alike: its weights times the
layer's values, through the layer's own out_proj, give the very output the attention module
returned in the forward (recorded by a forward hook), so they are the weights that forward used.
The families differ in where QK-norm acts (per head: Qwen3, Gemma 3; over the whole projection:
Olmo 3), in the score scale (Gemma 3's query_pre_attn_scalar) and in the sliding window of
Gemma 3's and Olmo 3's local layers: the tiny models here have a window shorter than the prompt,
local and global layers, norms away from 1 and a scale that is not 1 / sqrt(head_dim)."""
import numpy as np
import pytest

from tinygpt import GPTModel, Llama3Model, Qwen3Model, Tensor, manual_seed, no_grad
from tinygpt.model import Gemma3Model, Olmo3Model, Qwen3MoeModel, for_inference
from tinygpt.model.gemma3 import GLOBAL, LOCAL
from tinygpt.testing import assert_close
from tinygpt.viz import attention_weights, inspect_position

WINDOW = 3
GPT = {"vocab_size": 50, "context_length": 32, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
       "drop_rate": 0.0, "qkv_bias": True}
QWEN3 = {"vocab_size": 50, "context_length": 32, "emb_dim": 16, "n_heads": 4, "n_layers": 2,
         "hidden_dim": 24, "head_dim": 8, "qk_norm": True, "n_kv_groups": 2, "rope_base": 10_000.0}
LLAMA = {"vocab_size": 50, "context_length": 32, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
         "hidden_dim": 24, "n_kv_groups": 2, "rope_base": 500.0}
GEMMA3 = {"vocab_size": 50, "context_length": 32, "emb_dim": 16, "n_heads": 4, "n_layers": 3,
          "hidden_dim": 24, "head_dim": 8, "n_kv_groups": 2, "rope_base": 1000.0,
          "rope_local_base": 100.0, "rope_linear_factor": 2.0, "sliding_window": WINDOW,
          "layer_types": [LOCAL, GLOBAL, LOCAL], "query_pre_attn_scalar": 3}
OLMO3 = {"vocab_size": 50, "context_length": 32, "emb_dim": 16, "n_heads": 4, "n_layers": 3,
         "hidden_dim": 24, "head_dim": 8, "n_kv_groups": 2, "rope_base": 10_000.0,
         "sliding_window": WINDOW, "layer_types": [LOCAL, GLOBAL, LOCAL],
         "rope_yarn": {"factor": 4.0, "original_context_length": 8}}
QWEN3_MOE = {**QWEN3, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 8}
FAMILIES = {"gpt": (GPTModel, GPT), "qwen3": (Qwen3Model, QWEN3), "llama": (Llama3Model, LLAMA),
            "gemma3": (Gemma3Model, GEMMA3), "olmo3": (Olmo3Model, OLMO3),
            "qwen3_moe": (Qwen3MoeModel, QWEN3_MOE)}
T = 11  # prompt tokens, several windows long


def build(kind, dtype, fast):
    """A tiny random model of `kind` with its norm scales drawn away from their initial value
    (so a norm over the wrong values, or skipped, shows) and larger query/key weights (so the
    scores are not all near 0 and a wrong scale shows), and T token ids."""
    cls, cfg = FAMILIES[kind]
    manual_seed(5)
    model = cls(cfg).eval()
    rng = np.random.default_rng(7)
    for name, p in model.named_parameters():
        if "norm" in name:
            p.data[...] = rng.uniform(-0.5, 1.5, p.shape)
        elif "W_query" in name or "W_key" in name:
            p.data *= 4.0
    model.to(dtype)
    ids = rng.integers(0, cfg["vocab_size"], size=T)
    return (for_inference(model) if fast else model), ids


def recorded_attention(model, ids):
    """Each layer's attention module's inputs and output in one forward (forward hooks)."""
    seen = {}
    handles = [block.att.register_forward_hook(
        lambda module, inputs, output, i=i: seen.__setitem__(i, (inputs[0], output)))
        for i, block in enumerate(model.trf_blocks)]
    try:
        with no_grad():
            model(ids[None, :])
    finally:
        for handle in handles:
            handle.remove()
    return [seen[i] for i in range(len(model.trf_blocks))]


def output_from_weights(att, x, weights):
    """weights (H, T, T) @ the layer's values, through its out_proj: (1, T, emb), the rest of the
    layer's forward computed from its own modules."""
    heads, kv_heads, hd = att.num_heads, getattr(att, "num_kv_groups", att.num_heads), att.head_dim
    with no_grad():
        values = att.W_value(x).data[0].reshape(x.shape[1], kv_heads, hd).transpose(1, 0, 2)  # (G, T, hd)
        values = np.repeat(values, heads // kv_heads, axis=0)           # (H, T, hd)
        context = weights @ values                                      # (H, T, hd)
        context = context.transpose(1, 0, 2).reshape(1, x.shape[1], heads * hd)  # (1, T, H*hd)
        return att.out_proj(Tensor(context.astype(x.dtype))).data      # (1, T, emb)


def layer_window(model, layer):
    """The window of `layer` as its config says: None on a full-attention layer."""
    kinds = model.cfg.get("layer_types")
    return model.cfg["sliding_window"] if kinds and kinds[layer] == LOCAL else None


@pytest.mark.parametrize("fast", [False, True], ids=["book-layers", "for_inference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", list(FAMILIES))
def test_the_weights_reproduce_the_layers_own_output(kind, dtype, fast):
    model, ids = build(kind, dtype, fast)
    recorded = recorded_attention(model, ids)
    for layer, (x, output) in enumerate(recorded):
        att = model.trf_blocks[layer].att
        weights = attention_weights(model, ids, layer)                  # (H, T, T)
        assert weights.shape == (att.num_heads, T, T) and weights.dtype == np.float64
        # TOLERANCES["op"] of the dtype: the same products, summed in another order
        assert_close(output_from_weights(att, x, weights), output.data, what=f"{kind} layer {layer}")
        np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-12)
        assert np.all(np.triu(weights, k=1) == 0.0)                     # no look ahead
        window = layer_window(model, layer)
        far = np.tril(np.ones((T, T), bool), k=-WINDOW)                 # keys >= WINDOW back
        if window is not None:
            assert np.all(weights[:, far] == 0.0), f"{kind} layer {layer} sees past its window"
        else:
            assert np.all(weights[:, far] > 0.0)                        # a full layer sees them


@pytest.mark.parametrize("kind", ["gemma3", "olmo3"])
def test_the_windowed_families_have_local_and_global_layers(kind):
    model, _ = build(kind, np.float32, False)
    windows = [model.trf_blocks[i].att.sliding_window for i in range(len(model.trf_blocks))]
    assert windows == [WINDOW, None, WINDOW] and T > 2 * WINDOW


@pytest.mark.parametrize("fast", [False, True], ids=["book-layers", "for_inference"])
@pytest.mark.parametrize("kind", ["gemma3", "olmo3", "qwen3_moe"])
def test_inspect_position_reads_the_same_row(kind, fast):
    model, ids = build(kind, np.float32, fast)
    for layer in range(len(model.trf_blocks)):
        full = attention_weights(model, ids, layer)                     # (H, T, T)
        for position in (0, WINDOW, T - 1):
            got = inspect_position(model, ids, position, layer, k=3)
            assert got.attention.shape == (full.shape[0], position + 1)
            np.testing.assert_allclose(got.attention, full[:, position, :position + 1],
                                       atol=1e-6, rtol=0)
            if layer_window(model, layer) is not None:
                assert np.all(got.attention[:, :position + 1 - WINDOW] == 0.0)
