"""Qwen3 MoE: MoEFeedForward against the book's dense `llms_from_scratch.qwen3.MoEFeedForward`
(output and every gradient, float64) and finite differences; only the chosen experts run; the
load-balancing loss as transformers computes it; a tiny transformers Qwen3MoeForCausalLM saved
in shards and read by load_pretrained gives the same logits and greedy tokens; training steps
(with the auxiliary loss) lower the loss; bad configs are refused by name."""
import json

import numpy as np
import pytest
import torch

import tinygpt as tg
from helpers import fd_check
from modern_models import compare_logits, tokens, train_steps
from tinygpt.model import MoEFeedForward, Qwen3MoeModel
from tinygpt.weights import load_pretrained, save_pretrained_hf
from tinygpt.weights.claims import WeightsError

transformers = pytest.importorskip("transformers")

LAYER = {"emb_dim": 12, "num_experts": 6, "num_experts_per_tok": 2, "moe_intermediate_size": 10}
TINY_MOE = {"vocab_size": 64, "context_length": 64, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
            "head_dim": 8, "n_kv_groups": 2, "rope_base": 10_000.0, "num_experts": 8,
            "num_experts_per_tok": 2, "moe_intermediate_size": 16}
HF_TINY = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "moe_intermediate_size": 16,
           "num_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
           "max_position_embeddings": 64, "norm_topk_prob": True}


def layer_and_input(dtype=np.float64, seed=0):
    tg.manual_seed(seed)
    layer = MoEFeedForward(LAYER).to(dtype)
    layer.gate.weight.data *= 4.0            # routing far from ties
    x = np.random.default_rng(seed).standard_normal((2, 5, 12)).astype(dtype)
    return layer, x


def test_the_layer_and_its_gradients_match_the_books_dense_moe():
    book = pytest.importorskip("llms_from_scratch.qwen3")
    ours, x = layer_and_input()
    theirs = book.MoEFeedForward({**LAYER, "dtype": torch.float64}).to_empty(device="cpu")
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    x_t = torch.from_numpy(x).requires_grad_(True)
    dout = np.random.default_rng(9).standard_normal(x.shape)
    out_t = theirs(x_t)
    (out_t * torch.from_numpy(dout)).sum().backward()
    x_ours = tg.tensor(x, requires_grad=True)
    out = ours(x_ours)
    (out * dout).sum().backward()
    np.testing.assert_allclose(out.data, out_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x_ours.grad, x_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, p in ours.named_parameters():   # experts nobody chose: no gradient, theirs all 0
        want = dict(theirs.named_parameters())[name].grad.numpy()
        got = np.zeros_like(want) if p.grad is None else p.grad
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=name)


def test_finite_differences_through_routing_and_experts():
    layer, x = layer_and_input(seed=1)
    fd_check(lambda inp: layer(inp), [x], name="MoEFeedForward")


def test_only_the_chosen_experts_compute():
    layer, x = layer_and_input(seed=2)
    rows_seen = {}
    for e, fc1 in enumerate(layer.fc1):
        fc1.register_forward_hook(lambda m, inp, out, e=e: rows_seen.__setitem__(e, inp[0].shape[0]))
    layer(x[:1, :1])                          # one token: exactly its two experts, one row each
    assert sorted(rows_seen.values()) == [1, 1] and len(rows_seen) == 2
    rows_seen.clear()
    layer(x)                                  # 10 tokens x 2 slots = 20 rows over the experts
    stats = layer.router_stats
    assert sum(rows_seen.values()) == 20 == stats["tokens_per_expert"].sum()
    assert rows_seen == {e: int(c) for e, c in enumerate(stats["tokens_per_expert"]) if c}


def test_the_load_balancing_loss_is_transformers():
    from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func
    layer, x = layer_and_input(seed=3)
    layer(x)
    logits = torch.from_numpy(layer.gate(x.reshape(-1, 12)).data)
    want = load_balancing_loss_func((logits,), num_experts=6, top_k=2)
    # theirs rounds through float32 on the way; a formula slip (f_e over N*k, a missing factor
    # num_experts) would be off by a factor of 2 or 6
    assert float(layer.router_stats["aux_loss"].data) == pytest.approx(float(want), rel=1e-6)


@pytest.fixture(scope="module")
def sharded_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(**HF_TINY)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("mlp.gate.weight"):
                p.normal_(0.0, 0.5)          # a router that prefers some experts
    folder = tmp_path_factory.mktemp("qwen3_moe")
    model.save_pretrained(folder, max_shard_size="40KB")
    return folder, model


def test_load_pretrained_of_sharded_files_matches_transformers(sharded_folder):
    folder, theirs = sharded_folder
    assert (folder / "model.safetensors.index.json").is_file()
    ours = load_pretrained(folder)
    assert isinstance(ours, Qwen3MoeModel) and ours.cfg["norm_topk_prob"] is True
    ids = tokens(TINY_MOE, batch=2, length=12)
    with torch.no_grad():
        their_logits = theirs(torch.from_numpy(ids)).logits.numpy()
    compare_logits(ours(ids).data, their_logits, np.float32, "qwen3 moe logits")
    prompt = tokens(TINY_MOE, batch=1, length=3, seed=3)
    with torch.no_grad():
        want = theirs.generate(torch.from_numpy(prompt), max_new_tokens=15, do_sample=False,
                               eos_token_id=None, pad_token_id=0).numpy()
    for use_cache in (True, False):
        np.testing.assert_array_equal(tg.generate(ours, prompt, 15, 64, use_cache=use_cache), want)


def test_save_pretrained_hf_writes_what_transformers_reads(tmp_path):
    tg.manual_seed(5)
    ours = Qwen3MoeModel(TINY_MOE)
    save_pretrained_hf(ours, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(theirs).__name__ == "Qwen3MoeForCausalLM"
    ids = tokens(TINY_MOE, length=10)
    with torch.no_grad():
        their_logits = theirs(torch.from_numpy(ids)).logits.numpy()
    compare_logits(ours(ids).data, their_logits, np.float32, "qwen3 moe saved")


def test_training_steps_with_the_aux_loss_lower_the_loss():
    tg.manual_seed(0)
    model = Qwen3MoeModel(TINY_MOE)
    def router_learns(m):
        assert m.trf_blocks[0].ff.gate.weight.grad is not None
    losses = train_steps(model, tokens(TINY_MOE, batch=2, length=14, seed=6),
                         extra_loss=lambda m: 0.01 * m.aux_loss(), after_backward=router_learns)
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("change,named", [
    ({"num_experts": 10 ** 9}, "num_experts"),
    ({"num_experts_per_tok": 9}, "num_experts_per_tok"),
    ({"moe_intermediate_size": 17}, "moe_intermediate_size"),
    ({"mlp_only_layers": [1]}, "mlp_only_layers"),
    ({"decoder_sparse_step": 2}, "decoder_sparse_step"),
])
def test_bad_configs_are_refused_by_name(sharded_folder, tmp_path, change, named):
    folder, _ = sharded_folder
    config = {**json.loads((folder / "config.json").read_text()), **change}
    (tmp_path / "config.json").write_text(json.dumps(config))
    for file in folder.glob("model*"):
        (tmp_path / file.name).symlink_to(file)
    with pytest.raises(WeightsError, match=named):
        load_pretrained(tmp_path)
