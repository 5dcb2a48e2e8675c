"""`tinygpt serve` with a Qwen3 model (a tiny random one in Hugging Face's layout beside a
tokenizer.json built here, offline): a chat request goes through Qwen3's chat template, a
completion through the plain tokenizer, each equal to `tinygpt.generate` with the same seed;
the page's inspection works on grouped-query attention with RoPE."""
import numpy as np
import pytest

from test_serve_helpers import events, in_process_server, make_hf_folder, post
from tinygpt import manual_seed
from tinygpt.model import Qwen3Model, generate
from tinygpt.viz import inspect_position
from tokenizer_files import write_qwen3_tokenizer_json

QWEN3 = {"vocab_size": 320, "context_length": 64, "emb_dim": 16, "n_heads": 4, "n_layers": 2,
         "hidden_dim": 24, "head_dim": 8, "qk_norm": True, "n_kv_groups": 2,
         "rope_base": 10_000.0}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = make_hf_folder(tmp_path_factory.mktemp("serve_qwen3"), Qwen3Model, QWEN3,
                            write_qwen3_tokenizer_json, seed=6)
    with in_process_server(folder, max_tokens=16) as server:
        yield server


def reference(engine, ids, seed, n, temperature):
    manual_seed(seed)
    out = generate(engine.model, np.asarray([ids]), n, min(64, len(ids) + n),
                   temperature=temperature, eos_id=engine.text_model.stop_ids[0])
    new = [int(i) for i in out[0, len(ids):]]
    ends = [k for k, i in enumerate(new) if i in engine.text_model.stop_ids]
    return new[:ends[0]] if ends else new


def test_a_chat_request_uses_qwen3s_chat_template(server):
    engine = server.engine
    assert "Qwen3" in engine.text_model.style
    status, body = post(server.url, "/api/generate", {"prompt": "Hello there", "mode": "chat",
                                                       "max_tokens": 10, "seed": 2,
                                                       "temperature": 1.0})
    sent = events(body)
    prompt = [i for i, _ in sent[0]["prompt"]]
    pieces = "".join(p for _, p in sent[0]["prompt"])
    assert status == 200 and pieces.startswith("<|im_start|>user\nHello there<|im_end|>")
    assert prompt == engine.tokenizer.encode("Hello there")  # the template, as `tinygpt chat`
    want = reference(engine, prompt, 2, 10, 1.0)
    assert [e["token"][0] for e in sent if "token" in e] == want
    status, answer = post(server.url, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 10, "seed": 2,
        "temperature": 1.0})
    assert status == 200
    assert answer["choices"][0]["message"]["content"] == engine.tokenizer.decode(want)
    assert answer["usage"]["prompt_tokens"] == len(prompt)


def test_a_completion_is_the_plain_text_without_the_template(server):
    engine = server.engine
    status, answer = post(server.url, "/v1/completions", {"prompt": "It had always been",
                                                          "max_tokens": 8, "temperature": 0})
    ids = engine.tokenizer.encode("It had always been", chat_wrapped=False)
    want = reference(engine, ids, 0, 8, 0.0)
    assert status == 200 and answer["usage"]["prompt_tokens"] == len(ids)
    assert answer["choices"][0]["text"] == engine.tokenizer.decode(want)


def test_inspection_of_grouped_query_attention(server):
    engine = server.engine
    ids = engine.tokenizer.encode("It had always been a surprise", chat_wrapped=False)
    status, body = post(server.url, "/api/inspect", {"ids": ids, "position": 4, "layer": 1})
    assert status == 200, body
    got = inspect_position(engine.model, ids, 4, 1, 10)
    np.testing.assert_allclose(body["attention"], got.attention, atol=1e-12)
    assert len(body["attention"]) == QWEN3["n_heads"] and len(body["lens"]) == QWEN3["n_layers"]
    assert abs(body["prob_sum"] - 1.0) < 1e-9
    info = post(server.url, "/api/inspect", {"ids": ids, "layer": 2})
    assert info[0] == 400 and info[1]["error"]["param"] == "layer"
