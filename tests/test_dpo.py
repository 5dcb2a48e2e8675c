"""DPO's pieces (tinygpt.finetune.dpo) against a PyTorch transcription of the book's notebook
(`ch07/04_preference-tuning-with-dpo/dpo-from-scratch.ipynb`): compute_logprobs and
compute_dpo_loss (values and gradients, float64 and float32, on random inputs with masks),
the collate on batches of real entries, the logsigmoid op at extreme inputs, and bad input."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings, strategies as st

import tinygpt.nn.functional as F
from helpers import assert_close, check_op, fd_check
from tinygpt.assets import asset_path
from tinygpt.core.tensor import Tensor
from tinygpt.data.instruct import split_instruction_data
from tinygpt.errors import InputError
from tinygpt.finetune.dpo import (PreferenceDataset, compute_dpo_loss, compute_logprobs,
                                  dpo_collate_fn, load_preference_data, usable_entries)
from tinygpt.finetune.dpo_data import MalformedPreferenceError


# ---- the notebook's functions, transcribed in PyTorch --------------------------------------

def torch_compute_logprobs(logits, labels, selection_mask=None):
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    log_probs = TF.log_softmax(logits, dim=-1)
    selected_log_probs = torch.gather(input=log_probs, dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)
    if selection_mask is not None:
        mask = selection_mask[:, 1:].clone()
        selected_log_probs = selected_log_probs * mask
        return selected_log_probs.sum(-1) / mask.sum(-1)
    return selected_log_probs.mean(-1)


def torch_compute_dpo_loss(model_chosen_logprobs, model_rejected_logprobs,
                           reference_chosen_logprobs, reference_rejected_logprobs, beta=0.1):
    model_logratios = model_chosen_logprobs - model_rejected_logprobs
    reference_logratios = reference_chosen_logprobs - reference_rejected_logprobs
    logits = model_logratios - reference_logratios
    losses = -TF.logsigmoid(beta * logits)
    chosen_rewards = (model_chosen_logprobs - reference_chosen_logprobs).detach()
    rejected_rewards = (model_rejected_logprobs - reference_rejected_logprobs).detach()
    return losses.mean(), chosen_rewards.mean(), rejected_rewards.mean()


def torch_collate(batch, pad_token_id=50256, allowed_max_length=None, mask_prompt_tokens=True):
    batch_data = {"prompt": [], "chosen": [], "rejected": [], "rejected_mask": [], "chosen_mask": []}
    max_length_common = 0
    for key in ["chosen", "rejected"]:
        max_length_common = max(max_length_common, max(len(item[key]) + 1 for item in batch))
    for item in batch:
        prompt = torch.tensor(item["prompt"])
        batch_data["prompt"].append(prompt)
        for key in ["chosen", "rejected"]:
            sequence = item[key]
            padded = sequence + [pad_token_id] * (max_length_common - len(sequence))
            mask = torch.ones(len(padded)).bool()
            mask[len(sequence):] = False
            if mask_prompt_tokens:
                mask[:prompt.shape[0] + 2] = False
            batch_data[key].append(torch.tensor(padded))
            batch_data[f"{key}_mask"].append(mask)
    for key in ["chosen", "rejected", "chosen_mask", "rejected_mask"]:
        tensor_stack = torch.stack(batch_data[key])
        if allowed_max_length is not None:
            tensor_stack = tensor_stack[:, :allowed_max_length]
        batch_data[key] = tensor_stack
    return batch_data


# ---- random inputs ------------------------------------------------------------------------

@st.composite
def logprob_inputs(draw, dtype):
    b, T, V = draw(st.integers(1, 3)), draw(st.integers(2, 6)), draw(st.integers(2, 9))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(b, T, V)) * draw(st.sampled_from([0.5, 3.0, 20.0]))).astype(dtype)
    labels = rng.integers(0, V, size=(b, T)).astype(np.int64)
    mask = rng.random((b, T)) < draw(st.sampled_from([0.3, 0.7, 1.0]))
    mask[np.arange(b), rng.integers(1, T, size=b)] = True  # every row scores at least one token
    return logits, labels, mask


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=40)
@given(data=st.data())
def test_compute_logprobs_matches_the_notebook(dtype, data):
    logits, labels, mask = data.draw(logprob_inputs(dtype))
    check_op(compute_logprobs, torch_compute_logprobs, [logits, labels, mask],
             name="compute_logprobs(masked)")
    check_op(compute_logprobs, torch_compute_logprobs, [logits, labels],
             name="compute_logprobs(no mask)")


@settings(max_examples=15)
@given(data=st.data())
def test_compute_logprobs_finite_differences_and_sum(data):
    logits, labels, mask = data.draw(logprob_inputs(np.float64))
    fd_check(lambda x: compute_logprobs(x, labels, mask), [logits], name="compute_logprobs")
    fd_check(lambda x: compute_logprobs(x, labels, mask, reduction="sum"), [logits],
             name="compute_logprobs(sum)")
    check_op(lambda x: compute_logprobs(x, labels, mask, reduction="sum"),
             lambda x: (torch_compute_logprobs(x, torch.from_numpy(labels), torch.from_numpy(mask))
                        * torch.from_numpy(mask[:, 1:]).sum(-1)), [logits], name="sum = mean * count")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), b=st.integers(1, 6), spread=st.sampled_from([0.1, 5.0, 300.0]),
       beta=st.sampled_from([0.1, 0.5, 2.0]))
def test_compute_dpo_loss_matches_the_notebook(dtype, seed, b, spread, beta):
    rng = np.random.default_rng(seed)
    args = [(-np.abs(rng.normal(size=b) * spread)).astype(dtype) for _ in range(4)]  # log-probs
    # the rewards are differences of log-probs of size `spread`: in float32 each difference is
    # exact only to an ulp of its inputs (3e-5 at 300), so the absolute tolerance scales with them
    wider = spread if dtype == np.float32 and spread > 1 else 1.0
    check_op(lambda *a: compute_dpo_loss(*a, beta=beta), lambda *a: torch_compute_dpo_loss(*a, beta=beta),
             args, name="compute_dpo_loss (loss, rewards)", tol_factor=wider)
    check_op(lambda *a: compute_dpo_loss(*a, beta=beta)[0],
             lambda *a: torch_compute_dpo_loss(*a, beta=beta)[0], args, name="DPO loss gradients")
    if dtype == np.float64:
        fd_check(lambda *a: compute_dpo_loss(*a, beta=beta)[0], args, name="DPO loss")


def test_dpo_loss_from_logits_end_to_end_gradient():
    """Policy logits -> log-probs -> loss, the reference's log-probs constants: the gradient the
    training step uses, against the notebook's functions in float64."""
    rng = np.random.default_rng(7)
    b, T, V = 3, 7, 11
    logits_c, logits_r = rng.normal(size=(2, b, T, V)) * 2
    ref_c, ref_r = rng.normal(size=(2, b))
    labels_c, labels_r = rng.integers(0, V, size=(2, b, T))
    mask_c, mask_r = rng.random((2, b, T)) < 0.6
    mask_c[:, 3] = mask_r[:, 4] = True

    def tg_loss(lc, lr):
        return compute_dpo_loss(compute_logprobs(lc, labels_c, mask_c), compute_logprobs(lr, labels_r, mask_r),
                                ref_c, ref_r, beta=0.1)[0]

    def torch_loss(lc, lr):
        t = torch.from_numpy
        return torch_compute_dpo_loss(torch_compute_logprobs(lc, t(labels_c), t(mask_c)),
                                      torch_compute_logprobs(lr, t(labels_r), t(mask_r)),
                                      t(ref_c), t(ref_r), beta=0.1)[0]
    check_op(tg_loss, torch_loss, [logits_c, logits_r], name="DPO loss from logits")


def test_identical_policy_and_reference_give_ln2_and_zero_rewards():
    lp = np.array([-1.5, -0.25, -3.0])
    loss, chosen, rejected = compute_dpo_loss(lp, lp[::-1].copy(), lp, lp[::-1].copy())
    assert loss.item() == pytest.approx(math.log(2), abs=1e-15)
    assert chosen.item() == rejected.item() == 0.0


# ---- logsigmoid ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logsigmoid_is_finite_and_exact_at_extremes(dtype):
    x = np.array([-1e4, -800.0, -100.0, -20.0, -1e-8, 0.0, 1e-8, 20.0, 100.0, 800.0, 1e4], dtype)
    check_op(F.logsigmoid, TF.logsigmoid, [x], name="logsigmoid extremes")
    out = F.logsigmoid(Tensor(x))
    assert np.isfinite(out.data).all() and out.dtype == dtype


# ---- data ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def preference_data():
    return load_preference_data(asset_path("instruction-data-with-preference.json"))


def test_shipped_data_and_the_book_split(preference_data):
    train, test, val = split_instruction_data(preference_data)
    assert (len(train), len(test), len(val)) == (935, 110, 55)
    assert preference_data[50]["rejected"] == "The correct spelling is obviously 'Occasion.'"


@pytest.mark.parametrize("start,size,allowed,mask_prompt", [(0, 2, 1024, True), (100, 8, None, True),
                                                             (300, 8, 60, True), (500, 5, None, False)])
def test_collate_matches_the_notebook(preference_data, start, size, allowed, mask_prompt):
    dataset = PreferenceDataset(preference_data[start:start + size])
    items = [dataset[i] for i in range(len(dataset))]
    ours = dpo_collate_fn(items, allowed_max_length=allowed, mask_prompt_tokens=mask_prompt)
    ref = torch_collate(items, allowed_max_length=allowed, mask_prompt_tokens=mask_prompt)
    assert set(ours) == set(ref)
    for key in ("chosen", "rejected", "chosen_mask", "rejected_mask"):
        assert_close(ours[key], ref[key].numpy(), what=key)
    assert ours["chosen"].dtype == np.int64 and ours["chosen_mask"].dtype == np.bool_
    for p, q in zip(ours["prompt"], ref["prompt"]):
        assert_close(p, q.numpy(), what="prompt")


def test_collate_of_the_notebooks_first_two_entries(preference_data):
    """The notebook prints this batch: 81 tokens, the chosen mask True on positions 50..73."""
    batch = dpo_collate_fn([PreferenceDataset(preference_data[:2])[i] for i in range(2)],
                           allowed_max_length=1024)
    assert batch["chosen"].shape == (2, 81)
    assert np.flatnonzero(batch["chosen_mask"][0]).tolist() == list(range(50, 74))
    assert batch["chosen"][0, 74:].tolist() == [50256] * 7


def test_usable_entries_drops_those_without_a_scored_response_token(preference_data):
    data = preference_data[:40]
    dataset = PreferenceDataset(data)
    prompt_lengths = [len(item["prompt"]) for item in dataset.encoded_texts]
    limit = sorted(prompt_lengths)[20] + 3  # about half the prompts leave no response token
    kept, index = usable_entries(data, dataset, limit)
    assert 0 < len(kept) < len(data)
    assert all(prompt_lengths[i] + 2 < limit for i in index)
    batch = dpo_collate_fn([dataset[i] for i in index], allowed_max_length=limit)
    assert batch["chosen_mask"][:, 1:].any(axis=1).all() and batch["rejected_mask"][:, 1:].any(axis=1).all()


# ---- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("change,message", [
    (lambda e: e.pop("chosen"), r"entry 3 has no 'chosen'"),
    (lambda e: e.pop("rejected"), r"entry 3 has no 'rejected'"),
    (lambda e: e.update(rejected=None), r"entry 3: 'rejected' must be a string, got NoneType"),
    (lambda e: e.update(chosen=["a"]), r"entry 3: 'chosen' must be a string, got list"),
])
def test_a_bad_entry_is_named_by_its_index(tmp_path, preference_data, change, message):
    data = [dict(e) for e in preference_data[:5]]
    change(data[3])
    path = tmp_path / "prefs.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(MalformedPreferenceError, match=message):
        load_preference_data(path)
    with pytest.raises(InputError, match=message):
        PreferenceDataset(data)


@pytest.mark.parametrize("beta", [0, -0.1, float("nan"), float("inf"), True, "0.1"])
def test_bad_beta_is_refused(beta):
    with pytest.raises(InputError, match="beta must be a finite number > 0"):
        compute_dpo_loss(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2), beta=beta)


def test_a_row_without_selected_tokens_is_refused():
    logits, labels = np.zeros((2, 4, 3)), np.zeros((2, 4), np.int64)
    mask = np.array([[True, False, False, False], [False, True, True, False]])
    with pytest.raises(InputError, match=r"selects no token after the first in row\(s\) \[0\]"):
        compute_logprobs(logits, labels, mask)


def test_empty_batch_is_refused():
    with pytest.raises(InputError, match="empty batch"):
        dpo_collate_fn([])
