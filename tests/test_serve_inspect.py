"""The inspection `tinygpt serve` shows and `tinygpt.viz` offers: the attention weights equal the
ones the model's own forward computes (recorded inside its softmax) for every layer and head, for
GPT-2's MultiHeadAttention and Qwen3/Llama's grouped-query attention with RoPE, before and after
`for_inference` (test_viz_families.py checks every family the CLI serves against each layer's own
output); the page's inspect request answers for Gemma 3 and Olmo 3 models, their sliding-window
layers weighing the keys beyond the window 0; the next-token probabilities are the softmax of the model's logits and sum to 1
over the vocabulary; the logit lens of the last layer is the model's own prediction."""
import numpy as np
import pytest

import tinygpt.nn.functional as F
import tinygpt.ops.modern as ops_modern
from test_serve_helpers import CFG, in_process_server, make_checkpoint, post
from tinygpt import GPTModel, Llama3Model, Qwen3Model, manual_seed, no_grad
from tinygpt.errors import InputError, InputIndexError
from tinygpt.model import for_inference
from tinygpt.viz import (attention_heatmap, attention_weights, inspect_position,
                         next_token_table)

QWEN3 = {"vocab_size": 50, "context_length": 32, "emb_dim": 16, "n_heads": 4, "n_layers": 2,
         "hidden_dim": 24, "head_dim": 8, "qk_norm": True, "n_kv_groups": 2, "rope_base": 10_000.0}
LLAMA = {"vocab_size": 50, "context_length": 40, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
         "hidden_dim": 24, "n_kv_groups": 2, "rope_base": 500.0}


def own_attention(model, ids, monkeypatch):
    """The attention weights the model's forward computes: every call of the causal softmax (the
    book's layers) or of the blocked attention kernel (the fast twins) recorded, one per layer in
    order, each as (heads, T, T)."""
    recorded = []

    def recording(softmax):
        def wrapper(scores, scale, dropout_p=0.0):
            weights = softmax(scores, scale, dropout_p)
            recorded.append(weights.data.reshape(-1, *weights.shape[-2:]))  # (H, T, T), b = 1
            return weights
        return wrapper
    softmax = F.scaled_causal_softmax  # the op itself, not the recording wrapper set below

    def recording_fused(attention):  # the fast twins' blocked kernel keeps no weights: the
        # softmax it computes is that of its own queries against its own keys, taken here in full
        def wrapper(queries, keys, values, dropout_p=0.0, window=None, scale=None):
            q, k = queries.data, keys.data                       # (b, H, T, hd), (b, G, L, hd)
            k = np.repeat(k, q.shape[1] // k.shape[1], axis=1)   # query head h reads h // (H / G)
            scores = q @ k.swapaxes(-1, -2)                      # (b, H, T, L)
            weights = softmax(scores, scale or q.shape[-1] ** -0.5)
            recorded.append(weights.data.reshape(-1, *weights.shape[-2:]))  # (H, T, T), b = 1
            return attention(queries, keys, values, dropout_p, window, scale)
        return wrapper
    monkeypatch.setattr(F, "scaled_causal_softmax", recording(F.scaled_causal_softmax))
    monkeypatch.setattr(ops_modern, "scaled_causal_softmax",
                        recording(ops_modern.scaled_causal_softmax))
    monkeypatch.setattr(F, "causal_attention", recording_fused(F.causal_attention))
    with no_grad():
        model(ids[None, :])
    monkeypatch.undo()
    return recorded


def build(kind, dtype):
    manual_seed(3)
    cls, cfg = {"gpt": (GPTModel, CFG), "qwen3": (Qwen3Model, QWEN3),
                "llama": (Llama3Model, LLAMA)}[kind]
    model = cls(cfg).eval()
    if dtype == np.float64:
        model.to(np.float64)
    ids = np.random.default_rng(1).integers(0, cfg["vocab_size"], size=13)
    return model, ids


@pytest.mark.parametrize("fast", [False, True], ids=["book-layers", "for_inference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", ["gpt", "qwen3", "llama"])
def test_attention_equals_the_models_own_weights(kind, dtype, fast, monkeypatch):
    model, ids = build(kind, dtype)
    if fast:
        model = for_inference(model)
    own = own_attention(model, ids, monkeypatch)
    assert len(own) == len(model.trf_blocks)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for layer, weights in enumerate(own):
        ours = attention_weights(model, ids, layer)              # (H, T, T)
        assert ours.shape == weights.shape == (model.cfg["n_heads"], ids.size, ids.size)
        np.testing.assert_allclose(ours, weights, atol=tol, rtol=0,
                                   err_msg=f"{kind} layer {layer}")
        np.testing.assert_allclose(ours.sum(axis=-1), 1.0, atol=1e-12)
        assert np.all(np.triu(ours, k=1) == 0.0)                 # causal: no look ahead


@pytest.mark.parametrize("kind", ["gpt", "qwen3"])
def test_the_probabilities_are_the_models_softmax_and_sum_to_one(kind):
    model, ids = build(kind, np.float32)
    model = for_inference(model)
    with no_grad():
        logits = model(ids[None, :]).data[0].astype(np.float64)   # (T, vocab)
    for position in (0, 5, ids.size - 1):
        got = inspect_position(model, ids, position, layer=1, k=7)
        z = np.exp(logits[position] - logits[position].max())
        want = z / z.sum()
        assert abs(got.prob_sum - 1.0) < 1e-9
        assert got.top_ids == list(np.argsort(-want, kind="stable")[:7])
        np.testing.assert_allclose(got.top_probs, want[got.top_ids], rtol=1e-5)
        assert got.top_probs == sorted(got.top_probs, reverse=True)
        assert got.lens_ids[-1] == int(np.argmax(logits[position]))  # the last layer's lens
        np.testing.assert_allclose(got.lens_probs[-1], want.max(), rtol=1e-5)
        row = attention_weights(model, ids, 1)[:, position, :position + 1]
        np.testing.assert_allclose(got.attention, row, atol=1e-6)
        if position + 1 < ids.size:
            nxt = int(ids[position + 1])
            assert got.next_id == nxt and abs(got.next_prob - want[nxt]) < 1e-6
            assert got.next_rank == 1 + int((want > want[nxt]).sum())
        else:
            assert got.next_id is None


def test_bad_arguments_are_named():
    model, ids = build("gpt", np.float32)
    with pytest.raises(InputIndexError, match="layer"):
        attention_weights(model, ids, 2)
    with pytest.raises(InputIndexError, match="position"):
        inspect_position(model, ids, 13, 0)
    with pytest.raises(InputIndexError, match="token ids"):
        inspect_position(model, [0, CFG["vocab_size"]], 0, 0)
    with pytest.raises(InputError, match="context_length"):
        attention_weights(model, np.zeros(CFG["context_length"] + 1, np.int64), 0)
    with pytest.raises(InputError, match="k must"):
        inspect_position(model, ids, 0, 0, k=0)


@pytest.fixture(scope="module")
def gpt2_tokenizer():
    from tinygpt.tokenizer import get_gpt2_tokenizer
    return get_gpt2_tokenizer()


def test_the_heatmap_draws_the_weights_of_one_head_or_their_average(gpt2_tokenizer):
    model, _ = build("gpt", np.float32)
    text = "The cat sat on the mat"
    ids = np.asarray(gpt2_tokenizer.encode(text))
    weights = attention_weights(model, ids, 1)
    for head, want in ((1, weights[1]), (None, weights.mean(axis=0))):
        fig = attention_heatmap(model, gpt2_tokenizer, text, layer=1, head=head)
        image = fig.axes[0].images[0].get_array()
        np.testing.assert_allclose(np.asarray(image), want, atol=1e-12)
        labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        assert labels == [gpt2_tokenizer.decode([i]) for i in ids]
    with pytest.raises(InputIndexError, match="head"):
        attention_heatmap(model, gpt2_tokenizer, text, layer=0, head=2)


def test_the_token_table_prints_top_k_and_the_logit_lens(gpt2_tokenizer):
    model, _ = build("gpt", np.float32)
    table = next_token_table(model, gpt2_tokenizer, "The cat sat", k=3)
    got = inspect_position(model, gpt2_tokenizer.encode("The cat sat"), 2, 0, 3)
    assert [i for _, i, _ in table.top] == got.top_ids and table.token == " sat"
    assert [layer for layer, _, _ in table.lens] == [0, 1]
    lines = str(table).splitlines()
    assert lines[0] == "after token 2 (' sat') the model predicts:" and len(lines) == 1 + 3 + 1 + 2


def test_the_inspect_endpoint_serves_the_same_numbers(tmp_path):
    folder = make_checkpoint(tmp_path / "tiny", seed=4)
    with in_process_server(folder) as server:
        engine = server.engine
        ids = engine.prompt_ids("Where does this token look?", chat=False)
        status, body = post(server.url, "/api/inspect",
                            {"ids": ids, "position": 3, "layer": 1, "k": 5})
        assert status == 200, body
        got = inspect_position(engine.model, ids, 3, 1, 5)
        assert [t["id"] for t in body["top"]] == got.top_ids
        np.testing.assert_allclose(body["attention"], got.attention, atol=1e-12)
        np.testing.assert_allclose(body["average"], got.attention.mean(axis=0), atol=1e-12)
        assert abs(body["prob_sum"] - 1.0) < 1e-9 and body["next"]["id"] == ids[4]
        assert body["context"] == [engine.piece(i) for i in ids[:4]]
        # a notebook may send text instead of ids: the last position by default
        status, by_text = post(server.url, "/api/inspect",
                               {"text": "Where does this token look?", "layer": 0})
        assert status == 200 and by_text["position"] == len(ids) - 1 and by_text["next"] is None
        status, bad = post(server.url, "/api/inspect", {"ids": [1, 99_999_999], "layer": 0})
        assert status == 400 and "token ids" in bad["error"]["message"]


@pytest.mark.parametrize("family", ["gemma3", "olmo3"])
def test_the_inspect_endpoint_answers_for_the_sliding_window_families(family, tmp_path):
    # the tokenizer.json writers of the chat tests (they skip without torch, transformers, tokenizers)
    from test_chat_families import tokenizers, write_gemma3_tokenizer_json, write_olmo3_tokenizer_json
    from test_viz_families import GEMMA3, OLMO3, WINDOW
    from tinygpt.model import Gemma3Model, Olmo3Model
    from tinygpt.weights import save_pretrained_hf
    write_tokenizer, cls, cfg = {"gemma3": (write_gemma3_tokenizer_json, Gemma3Model, GEMMA3),
                                 "olmo3": (write_olmo3_tokenizer_json, Olmo3Model, OLMO3)}[family]
    write_tokenizer(tmp_path / "tokenizer.json")
    vocab = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json")).get_vocab_size()
    manual_seed(8)
    save_pretrained_hf(cls({**cfg, "vocab_size": vocab, "context_length": 64}).eval(), tmp_path)
    with in_process_server(tmp_path) as server:
        engine = server.engine
        ids = engine.prompt_ids("Where does this token look, and how far back?", chat=False)
        assert len(ids) > 2 * WINDOW
        for layer, kind in enumerate(cfg["layer_types"]):
            status, body = post(server.url, "/api/inspect", {"ids": ids, "layer": layer, "k": 3})
            assert status == 200, body
            got = inspect_position(engine.model, ids, len(ids) - 1, layer, 3)
            attention = np.asarray(body["attention"])                 # (heads, T)
            np.testing.assert_allclose(attention, got.attention, atol=1e-12)
            np.testing.assert_allclose(attention.sum(axis=-1), 1.0, atol=1e-9)
            far = attention[:, :len(ids) - WINDOW]                    # keys >= WINDOW back
            assert np.all(far == 0.0) if kind == "sliding_attention" else np.all(far > 0.0)
