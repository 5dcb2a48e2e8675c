"""`run_dpo`: the DPO notebook end to end, shared by `examples/ch07_dpo.py` and
`tinygpt finetune-dpo`.

  1. the policy: the instruction-tuned model a chapter-7 run saved (a tinygpt checkpoint); the
     reference: its frozen copy (`dpo.frozen_copy`), made before any LoRA adapter is added;
  2. optionally LoRA on the policy (appendix E): only the adapters train;
  3. the preference data split like chapter 7 (935 / 110 / 55), loaders of `dpo_collate_fn`
     batches, AdamW, `train_model_dpo_simple`, the loss and reward-margin plots;
  4. the final loss and reward margin on the whole validation split, the responses of the
     reference (= the policy before training) and of the trained policy to a few test entries,
     and the policy saved (LoRA merged).

Settings by mode: the notebook's when the chapter-7 model was fine-tuned from GPT-2 weights
(`book=True`), and offline (the small chapter-7 model) a larger learning rate and sparser
evaluations, so that one epoch fits in a few minutes on 2 CPU cores.
"""
import pathlib
import time
from functools import partial

from ..assets import asset_path
from ..core.random import manual_seed
from ..data import DataLoader
from ..data.instruct import format_input, split_instruction_data
from ..errors import InputError, MissingFileError
from ..optim import AdamW
from ..tokenizer import get_gpt2_tokenizer
from ..train import load_model, save_checkpoint
from ..train.guard import check_finite_state
from .dpo import (check_beta, compute_dpo_loss_loader, frozen_copy, plot_dpo,
                  train_model_dpo_simple)
from .dpo_data import PreferenceDataset, dpo_collate_fn, load_preference_data, usable_entries
from .instruct import generate_responses, write_json
from .lora import merge_lora, replace_linear_with_lora, save_lora

# The notebook's settings (gpt2-medium fine-tuned in chapter 7).
BOOK_DPO_SETTINGS = dict(num_epochs=1, batch_size=8, lr=5e-6, weight_decay=0.01, eval_freq=5,
                         eval_iter=5, max_new_tokens=256)
# Offline (the 6.6M-parameter chapter-7 model): at the notebook's rate its reward margin barely
# moves in one epoch (5e-5 gave 0.014 after 40 steps), so the rate is 3e-4; evaluations are
# sparser because each costs 4 forward passes per batch through the 50,257-way output layer.
OFFLINE_DPO_SETTINGS = dict(num_epochs=1, batch_size=8, lr=3e-4, weight_decay=0.01, eval_freq=20,
                            eval_iter=2, max_new_tokens=64)
NUM_SHOWN_RESPONSES = 3


def resolve_model_path(model) -> pathlib.Path:
    """A checkpoint file, or a run directory holding model.safetensors (what chapter 7 writes)."""
    path = pathlib.Path(model)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise MissingFileError(f"no instruction-tuned model at {path}: run chapter 7 first "
                               "(examples/ch07_instruct.py or `tinygpt finetune-instruct`)")
    return path


def make_loaders(train_data, val_data, tokenizer, batch_size, allowed_max_length, seed, say):
    """Train (shuffled, seeded, full batches) and validation loaders of dpo_collate_fn batches,
    without the entries whose response the context cut would leave unscored."""
    collate = partial(dpo_collate_fn, allowed_max_length=allowed_max_length, mask_prompt_tokens=True)
    loaders = []
    for name, data, train in (("training", train_data, True), ("validation", val_data, False)):
        dataset = PreferenceDataset(data, tokenizer)
        kept, _ = usable_entries(data, dataset, allowed_max_length)
        if len(kept) < len(data):
            say(f"{len(data) - len(kept)} {name} entries leave no response token within "
                f"{allowed_max_length} tokens: left out")
            dataset = PreferenceDataset(kept, tokenizer)
        if len(dataset) == 0:
            raise InputError(f"the {name} split holds no usable preference entry")
        loaders.append(DataLoader(dataset, batch_size, shuffle=train, drop_last=train,
                                  collate_fn=collate, seed=seed))
    if len(loaders[0]) == 0:
        raise InputError(f"{len(loaders[0].dataset)} training entries make no full batch of {batch_size}")
    return loaders


def load_preference_splits(data_path, num_train, say):
    """The preference data (default: the book's) split like chapter 7 into (train, test,
    validation), the training split cut to its first `num_train` entries; InputError when a
    split is empty."""
    data = load_preference_data(data_path or asset_path("instruction-data-with-preference.json"))
    train_data, test_data, val_data = split_instruction_data(data)
    if num_train is not None:
        train_data = train_data[:num_train]
    say(f"{len(data)} preference entries: {len(train_data)} train, {len(test_data)} test, "
        f"{len(val_data)} val")
    for name, split in (("training", train_data), ("validation", val_data), ("test", test_data)):
        if not split:
            raise InputError(f"{len(data)} preference entries leave the {name} split empty")
    return train_data, test_data, val_data


def load_policy_and_reference(model, lora_rank, lora_alpha, seed, say):
    """The chapter-7 model as the policy (with LoRA adapters if `lora_rank`) and its frozen copy,
    made before any adapter, as the reference."""
    model_path = resolve_model_path(model)
    policy_model, _ = load_model(model_path)
    reference_model = frozen_copy(policy_model)  # before LoRA: the reference is the plain model
    if lora_rank:
        manual_seed(seed)
        replace_linear_with_lora(policy_model, lora_rank,
                                 lora_alpha if lora_alpha is not None else lora_rank)
    trainable = sum(p.size for p in policy_model.parameters() if p.requires_grad)
    say(f"policy {model_path}: {trainable:,} trainable parameters of "
        f"{sum(p.size for p in policy_model.parameters()):,}"
        + (f" (LoRA rank {lora_rank})" if lora_rank else ""))
    return policy_model, reference_model


def run_dpo(model="runs/ch07", book=False, data_path=None, out_dir="runs/dpo", num_epochs=None,
            batch_size=None, lr=None, weight_decay=None, beta=0.1, lora_rank=None, lora_alpha=None,
            eval_freq=None, eval_iter=None, max_new_tokens=None, num_train=None, seed=123,
            quiet=False, plot=True) -> dict:
    """DPO on the preference data, starting from the chapter-7 model `model` (a checkpoint or its
    run directory). `book=True` takes the notebook's settings (for a GPT-2-based chapter-7
    model), otherwise the offline ones; any argument given overrides them. `num_train` keeps
    only the first entries of the training split (for quick runs). Writes into `out_dir`:
    dpo-loss-plot.png, dpo-reward-margins-plot.png, dpo-responses.json (test entries with the
    reference's and the policy's responses), model.safetensors (the policy, LoRA merged) and,
    with LoRA, lora.safetensors. Returns a summary dict."""
    started = time.perf_counter()
    beta = check_beta(beta)
    defaults = BOOK_DPO_SETTINGS if book else OFFLINE_DPO_SETTINGS
    given = dict(num_epochs=num_epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                 eval_freq=eval_freq, eval_iter=eval_iter, max_new_tokens=max_new_tokens)
    settings = {k: defaults[k] if v is None else v for k, v in given.items()}
    say = (lambda *a: None) if quiet else print
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = get_gpt2_tokenizer()
    train_data, test_data, val_data = load_preference_splits(data_path, num_train, say)
    policy_model, reference_model = load_policy_and_reference(model, lora_rank, lora_alpha, seed, say)
    cfg = dict(policy_model.cfg)
    trainable = [p for p in policy_model.parameters() if p.requires_grad]
    train_loader, val_loader = make_loaders(train_data, val_data, tokenizer,
                                            settings["batch_size"], cfg["context_length"], seed, say)
    manual_seed(seed)
    optimizer = AdamW(trainable, lr=settings["lr"], weight_decay=settings["weight_decay"])
    policy_model.train()
    train_start = time.perf_counter()
    start_context = format_input(val_data[min(2, len(val_data) - 1)])  # the notebook's val_data[2]
    tracking = train_model_dpo_simple(policy_model, reference_model, train_loader, val_loader,
                                      optimizer, settings["num_epochs"], beta, settings["eval_freq"],
                                      settings["eval_iter"], start_context, tokenizer,
                                      write=say if quiet else None,
                                      progress="none" if quiet else None)
    result = {"tracking": tracking, "train_seconds": time.perf_counter() - train_start,
              "settings": {**settings, "beta": beta, "lora_rank": lora_rank}}
    policy_model.eval()
    val_loss, val_chosen, val_rejected = compute_dpo_loss_loader(val_loader, policy_model,
                                                                 reference_model, beta)
    result.update(val_loss=val_loss, val_reward_margin=val_chosen - val_rejected)
    say(f"validation ({len(val_loader.dataset)} entries): DPO loss {val_loss:.4f} "
        f"(start ln 2 = 0.6931), reward margin {val_chosen - val_rejected:.4f}")
    if plot and tracking["train_losses"]:
        try:
            result.update(plot_dpo(tracking, settings["num_epochs"], out_dir))
        except ImportError as err:
            say(f"(no plots: {err})")

    check_finite_state(policy_model.named_parameters(), f"the DPO policy to be saved in {out_dir}")
    if lora_rank:
        result["lora"] = save_lora(out_dir / "lora.safetensors", policy_model)
        merge_lora(policy_model)
        check_finite_state(policy_model.named_parameters(), "the DPO policy with LoRA merged")
    result["responses"] = show_responses(policy_model, reference_model, test_data, tokenizer,
                                         settings["max_new_tokens"], cfg["context_length"],
                                         out_dir, say)
    save_cfg = {**cfg, "tie_weights": bool(getattr(policy_model, "weights_tied", False))}
    result["checkpoint"] = save_checkpoint(out_dir / "model.safetensors", policy_model, config=save_cfg)
    result["seconds"] = time.perf_counter() - started
    return result


def show_responses(policy_model, reference_model, test_data, tokenizer, max_new_tokens, ctx,
                   out_dir, say) -> pathlib.Path:
    """The reference's (the policy before DPO) and the trained policy's greedy responses to the
    first test entries, printed and saved as dpo-responses.json."""
    entries = test_data[:NUM_SHOWN_RESPONSES]
    before = generate_responses(reference_model, entries, tokenizer, max_new_tokens, ctx,
                                key="reference_response", quiet=True)
    after = generate_responses(policy_model, before, tokenizer, max_new_tokens, ctx,
                               key="policy_response", quiet=True)
    for entry in after:
        say(f"\n{format_input(entry)}\n\nCorrect response:\n>> {entry['output']}\n"
            f"\nReference model response:\n>> {entry['reference_response']}\n"
            f"\nPolicy model response:\n>> {entry['policy_response']}\n" + "-" * 40)
    return write_json(out_dir / "dpo-responses.json", after)
