"""GPTModel (chapter 4) against the PyTorch twin: logits, loss and every gradient by name, state
dicts both ways, weight tying, dropout modes, input errors, the config validator, the 124M
parameter count and an AdamW loss trajectory (llm.c's test_gpt2 in miniature)."""
import numpy as np
import pytest
import torch
from reference import torch_gpt as ref

import tinygpt as tg
from tinygpt.model import (
    GELU,
    GPT_CONFIG_124M,
    FeedForward,
    GPTModel,
    LayerNorm,
    TransformerBlock,
    count_parameters,
    gpt2_config,
    model_configs,
    model_size_mb,
    validate_config,
)
from tinygpt.nn import functional as F

SMALL = {"vocab_size": 97, "context_length": 16, "emb_dim": 24, "n_heads": 4, "n_layers": 2,
         "drop_rate": 0.0, "qkv_bias": False}


def _model(dtype=np.float32, **overrides):
    tg.manual_seed(3)
    return GPTModel({**SMALL, **overrides}).to(dtype)


def _twin(model):
    cfg = {k: model.cfg[k] for k in SMALL}
    twin = ref.GPTModel(cfg)
    if model.weights_tied:
        twin.out_head.weight = twin.tok_emb.weight
    ref.copy_tinygpt_to_torch(model, twin)
    return twin


def _batch(batch, tokens, vocab=97, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(batch, tokens)).astype(np.int64)
    return ids, rng.integers(0, vocab, size=(batch, tokens)).astype(np.int64)


# --- agreement with the twin --------------------------------------------------------------------
BLOCKS = {  # chapter-4 pieces: (tinygpt factory, twin factory)
    "LayerNorm": (lambda: LayerNorm(SMALL["emb_dim"]), lambda: ref.LayerNorm(SMALL["emb_dim"])),
    "GELU": (GELU, ref.GELU),
    "FeedForward": (lambda: FeedForward(SMALL), lambda: ref.FeedForward(SMALL)),
    "TransformerBlock": (lambda: TransformerBlock({**SMALL, "qkv_bias": True}),
                         lambda: ref.TransformerBlock({**SMALL, "qkv_bias": True})),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(BLOCKS))
def test_chapter4_blocks_match_torch(name, dtype):
    ours, twin = BLOCKS[name]
    tg.manual_seed(4)
    module = ours().to(dtype)
    if name == "LayerNorm":  # move scale/shift off their init values so their use is checked
        module.scale.data = (1.0 + 0.1 * np.arange(24)).astype(dtype)
        module.shift.data = (0.05 * np.arange(24) - 0.5).astype(dtype)
    x = np.random.default_rng(1).standard_normal((2, 16, 24)).astype(dtype) * 2.0
    targets = np.random.default_rng(2).integers(0, 24, size=(2, 16)).astype(np.int64)
    ref.assert_matches_torch(module, twin(), x, targets, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("batch,tokens", [(1, 16), (3, 7)])  # 16 = the full context length
def test_gpt_logits_loss_and_every_grad_match_torch(dtype, qkv_bias, batch, tokens):
    model = _model(dtype, qkv_bias=qkv_bias)
    ids, targets = _batch(batch, tokens)
    ref.assert_matches_torch(model, _twin(model), ids, targets, f"GPTModel {np.dtype(dtype)}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpt_odd_head_dim_and_tied_weights_match_torch(dtype):
    # emb 15 / 3 heads = head_dim 5; out_head shares tok_emb's Parameter on both sides
    model = _model(dtype, emb_dim=15, n_heads=3, n_layers=3, qkv_bias=True, tie_weights=True)
    assert model.weights_tied and model.out_head.weight is model.tok_emb.weight
    ids, targets = _batch(2, 16)
    ref.assert_matches_torch(model, _twin(model), ids, targets, "tied GPTModel")


def test_forward_accepts_ndarray_and_tensor_ids():
    model = _model()
    ids, _ = _batch(2, 5)
    a = model(ids)
    b = model(tg.Tensor(ids.astype(np.int32)))
    assert isinstance(a, tg.Tensor) and a.shape == (2, 5, 97) and a.dtype == np.float32
    assert np.array_equal(a.data, b.data)
    # last_only runs the head on 2 rows instead of 10: OpenBLAS may pick another kernel (another
    # summation order) for that shape, so the logits agree to rounding, not bit for bit (some
    # CPUs differ in the last bit); a wrong position would be off by O(1)
    np.testing.assert_allclose(model(ids, last_only=True).data, a.data[:, -1:], rtol=1e-6, atol=1e-6)


# --- state dicts --------------------------------------------------------------------------------
def test_state_dict_names_and_shapes_equal_the_torch_models():
    model = _model(qkv_bias=True)
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    theirs = [(k, tuple(v.shape)) for k, v in ref.GPTModel({**SMALL, "qkv_bias": True}).state_dict().items()]
    assert ours == theirs
    assert "trf_blocks.1.ff.layers.2.weight" in dict(ours) and "final_norm.shift" in dict(ours)
    assert [n for n, _ in model.named_parameters()] == \
           [n for n, _ in ref.GPTModel({**SMALL, "qkv_bias": True}).named_parameters()]


def test_state_dict_round_trip_through_torch_is_exact():
    torch.manual_seed(0)
    twin = ref.GPTModel(SMALL)
    model = GPTModel(SMALL)
    model.load_state_dict(ref.to_numpy_state_dict(twin))        # a torch checkpoint, masks and all
    back = ref.GPTModel(SMALL)
    back.load_state_dict(ref.to_torch_state_dict(model.state_dict()), strict=True)
    for key, value in twin.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    ids, _ = _batch(2, 9)
    np.testing.assert_allclose(model(ids).data, twin(torch.from_numpy(ids)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)


def test_load_state_dict_masks_optional_tying_checked():
    model = _model()
    params_only = {k: v.copy() for k, v in model.state_dict(masks=False).items()}
    assert not any(k.endswith(".mask") for k in params_only)
    _model().load_state_dict(params_only)                          # strict, no masks needed
    tied = _model(tie_weights=True)
    with pytest.raises(ValueError, match="ties"):
        tied.load_state_dict(params_only)                          # two different matrices
    del params_only["out_head.weight"]
    tied.load_state_dict(params_only)                              # one is enough when tied
    assert np.array_equal(tied.out_head.weight.data, params_only["tok_emb.weight"])
    bad = dict(params_only, **{"tok_emb.weight": np.zeros((5, 24), np.float32)})
    with pytest.raises(ValueError, match="shape"):
        _model().load_state_dict(bad, strict=False)


# --- dropout, errors, config ----------------------------------------------------------------------
def test_dropout_active_in_train_off_in_eval_and_seeded():
    model = _model(drop_rate=0.3)
    ids, _ = _batch(2, 8)
    tg.manual_seed(11)
    a = model(ids).data
    b = model(ids).data
    tg.manual_seed(11)
    assert np.array_equal(model(ids).data, a)                     # seeded run reproduces
    assert not np.allclose(a, b)                                  # dropout on in train()
    model.eval()
    c = model(ids).data
    assert np.array_equal(c, model(ids).data)
    no_drop = _model(drop_rate=0.0)
    no_drop.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(no_drop(ids).data, c)           # eval() == no dropout


def test_too_many_tokens_names_both_numbers():
    with pytest.raises(ValueError, match=r"17 tokens.*context_length is 16"):
        _model()(np.zeros((1, 17), np.int64))


@pytest.mark.parametrize("bad", [97, -1, 1000])
def test_ids_outside_the_vocabulary_raise(bad):
    ids = np.zeros((1, 4), np.int64)
    ids[0, 2] = bad
    with pytest.raises(IndexError, match=rf"id {bad} is out of range for a table of 97 rows"):
        _model()(ids)


@pytest.mark.parametrize("ids", [np.zeros((4,), np.int64), np.zeros((1, 0), np.int64),
                                 np.zeros((1, 3), np.float32)])
def test_bad_input_shapes_and_dtypes_raise(ids):
    with pytest.raises((ValueError, TypeError)):
        _model()(ids)


def test_config_validator_names_the_key():
    cfg = dict(SMALL)
    del cfg["n_heads"]
    with pytest.raises(KeyError, match="n_heads"):
        GPTModel(cfg)
    with pytest.raises(ValueError, match="emb_dim"):
        validate_config({**SMALL, "emb_dim": 25})
    with pytest.raises(ValueError, match="drop_rate"):
        validate_config({**SMALL, "drop_rate": 1.5})
    with pytest.raises(ValueError, match="qkv_bias"):
        validate_config({**SMALL, "qkv_bias": "yes"})
    with pytest.raises(ValueError, match="n_layer"):
        validate_config({**SMALL, "n_layer": 2})                   # a typo is an unknown key
    assert validate_config(SMALL)["tie_weights"] is False


def test_book_configs():
    assert GPT_CONFIG_124M == {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768,
                               "n_heads": 12, "n_layers": 12, "drop_rate": 0.1,
                               "qkv_bias": False}
    assert set(model_configs) == {"gpt2-small (124M)", "gpt2-medium (355M)",
                                  "gpt2-large (774M)", "gpt2-xl (1558M)"}
    xl = gpt2_config("gpt2-xl (1558M)")
    assert (xl["emb_dim"], xl["n_layers"], xl["n_heads"], xl["qkv_bias"]) == (1600, 48, 25, True)
    for name in model_configs:
        validate_config(gpt2_config(name))


def test_parameter_count_and_size_of_gpt_config_124m():
    model = GPTModel(GPT_CONFIG_124M)                             # ~650 MB float32, built once
    assert count_parameters(model) == 163_009_536
    assert count_parameters(model, exclude_out_head=True) == 124_412_160
    assert f"{model_size_mb(model):.2f}" == "621.83"
    model.tie_weights()
    assert count_parameters(model) == 124_412_160
    assert count_parameters(model, exclude_out_head=True) == 124_412_160


# --- training: N AdamW steps against torch ------------------------------------------------------
def test_adamw_loss_trajectory_matches_torch():
    # qkv_bias=False as in GPT_CONFIG_124M: a key bias gets a gradient that is zero in exact
    # arithmetic (softmax ignores a per-row constant), and Adam's m / sqrt(v) would blow its
    # round-off up into full-size steps of arbitrary sign on either side
    model = _model(qkv_bias=False)
    twin = _twin(model)
    opt = tg.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.1)
    topt = torch.optim.AdamW(twin.parameters(), lr=4e-3, weight_decay=0.1)
    losses, tlosses = [], []
    for step in range(6):
        ids, targets = _batch(2, 16, seed=0)                     # one batch: loss must fall
        logits = model(ids)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        tlogits = twin(torch.from_numpy(ids))
        tloss = torch.nn.functional.cross_entropy(tlogits.flatten(0, 1), torch.from_numpy(targets.flatten()))
        topt.zero_grad()
        tloss.backward()
        topt.step()
        losses.append(float(loss.item()))
        tlosses.append(float(tloss.item()))
    np.testing.assert_allclose(losses, tlosses, rtol=1e-4)
    assert losses[-1] < losses[0] - 0.05, losses                 # it does learn
    final = {n: p.data for n, p in model.named_parameters()}
    want = {n: p.detach().numpy() for n, p in twin.named_parameters()}
    ref.assert_close_by_name(final, want, 1e-4, "parameters after AdamW")
