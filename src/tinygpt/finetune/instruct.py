"""Instruction fine-tuning (book chapter 7), optionally with LoRA (appendix E), and evaluation.

`run_instruction_finetune` is the whole chapter as one function, shared by
`examples/ch07_instruct.py` and `tinygpt finetune-instruct`:

  1. the model: GPT-2 weights (`weights="gpt2-medium (355M)"`, a local file or directory, or a
     tinygpt checkpoint), or offline a small GPT briefly pretrained on the training split's text;
  2. optionally LoRA (`lora_rank`): every Linear gets rank-r adapters, the rest is frozen;
  3. the book's training: AdamW, `train_model(schedule=False)`, loss plot;
  4. a response for every test entry (greedy, stop at end-of-text, prompt stripped), saved with
     the entries as JSON, and the model saved;
  5. scores: offline (ROUGE-L F1 and exact match against the reference output, always) and,
     when asked, a judge model served by Ollama (`/api/chat`) scoring 0-100 like the book
     (both in tinygpt/finetune/scoring.py).
"""
import json
import pathlib
import time
from functools import partial

import numpy as np
from tqdm.auto import tqdm

from ..assets import asset_path
from ..core.random import manual_seed
from ..data import DataLoader, create_dataloader_v1
from ..data.instruct import (
    InstructionDataset,
    custom_collate_fn,
    format_input,
    load_instruction_data,
    split_instruction_data,
)
from ..errors import CheckpointError, InputError
from ..files import atomic_write
from ..model import GPTModel
from ..model.generate import generate, text_to_token_ids, token_ids_to_text
from ..optim import AdamW
from ..tokenizer import get_gpt2_tokenizer
from ..train import load_model, plot_losses, save_checkpoint, train_model
from ..train.guard import check_finite_state
from .lora import merge_lora, replace_linear_with_lora, save_lora
from .scoring import OLLAMA_URL, offline_scores, score_with_ollama

END_OF_TEXT = 50256

# Offline default: a small GPT (6.6M parameters, 6.4M of them the two vocabulary matrices) that
# a 2-core CPU fine-tunes from scratch in a few minutes. Its cost is the 50,257-way output layer
# (logits per token), so extra layers are almost free. It learns the format and common phrasing,
# not much more: the number at the end shows the pipeline works, not a good model.
OFFLINE_CONFIG = {"vocab_size": 50257, "context_length": 160, "emb_dim": 64, "n_heads": 4,
                  "n_layers": 4, "drop_rate": 0.0, "qkv_bias": False}
# Settings by mode: the book's with GPT-2 weights (section 7.6), faster ones offline.
BOOK_SETTINGS = dict(num_epochs=2, lr=5e-5, eval_freq=5, eval_iter=5, max_new_tokens=256,
                     base_epochs=0)
OFFLINE_SETTINGS = dict(num_epochs=2, lr=2e-3, eval_freq=25, eval_iter=3, max_new_tokens=64,
                        base_epochs=0)
OFFLINE_LORA_BASE_EPOCHS = 2  # LoRA needs a base that knows something: pretrain one first


# --- responses ----------------------------------------------------------------------------------

def extract_response(generated_text: str, input_text: str) -> str:
    """Section 7.7: the generated text minus the prompt and the "### Response:" header."""
    return generated_text[len(input_text):].replace("### Response:", "").strip()


def generate_responses(model, entries, tokenizer=None, max_new_tokens=256, context_size=None,
                       key="model_response", quiet=False) -> list:
    """Section 7.7: greedy generation for every entry (stopping at end-of-text); returns new
    dicts, each entry plus `key` (the response with the prompt stripped)."""
    tokenizer = tokenizer or get_gpt2_tokenizer()
    context_size = context_size or model.cfg["context_length"]
    model.eval()
    out = []
    # disable=None: no bar when stderr is not a terminal (a log would get its carriage returns)
    for entry in tqdm(entries, desc="responses", unit="entry", disable=True if quiet else None,
                      dynamic_ncols=True):
        input_text = format_input(entry)
        token_ids = generate(model, text_to_token_ids(input_text, tokenizer)[:, -context_size:],
                             max_new_tokens, context_size, eos_id=END_OF_TEXT)
        generated_text = token_ids_to_text(token_ids, tokenizer)
        out.append({**entry, key: extract_response(generated_text, input_text)})
    return out


def write_json(path, obj) -> pathlib.Path:
    """json.dump(obj, indent=4) through tinygpt.files.atomic_write (complete or absent)."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=4, ensure_ascii=False)
    return pathlib.Path(path)


# --- the model ----------------------------------------------------------------------------------

def load_base_model(weights, drop_rate: float = 0.0):
    """GPT-2 by name/path (tinygpt.weights.load_gpt2) or a tinygpt checkpoint file, whose config
    is checked against its tensors' header shapes before the model is built (train.load_model)."""
    path = pathlib.Path(str(weights))
    if path.is_file() and path.suffix == ".safetensors":
        try:
            model, _ = load_model(path)
        except CheckpointError as err:
            if "not a tinygpt checkpoint" not in str(err):
                raise
        else:
            return model
    from ..weights import load_gpt2
    return load_gpt2(weights, drop_rate=drop_rate)


def pretrain_small_base(train_data, cfg=None, num_epochs=4, batch_size=8, lr=1e-3, seed=123,
                        quiet=False):
    """The offline base model: GPTModel(cfg) trained from scratch on the training entries' text
    (prompt + response, joined by <|endoftext|>) in context-length windows, book chapter 5 style."""
    cfg = dict(cfg or OFFLINE_CONFIG)
    manual_seed(seed)
    model = GPTModel(cfg)
    if num_epochs <= 0:
        return model, None
    text = "<|endoftext|>".join(format_input(e) + f"\n\n### Response:\n{e['output']}"
                                for e in train_data)
    ctx = cfg["context_length"]
    loader = create_dataloader_v1(text, batch_size=batch_size, max_length=ctx, stride=ctx,
                                  shuffle=True, drop_last=True, seed=seed)
    optimizer = AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    if not quiet:
        print(f"pretraining the small offline base ({sum(p.size for p in model.parameters()):,} "
              f"parameters) for {num_epochs} epochs of {len(loader)} batches")
    result = train_model(model, loader, loader, optimizer, num_epochs, eval_freq=10 ** 9,
                         eval_iter=1, start_context=None, tokenizer=None, schedule=False,
                         quiet=quiet)
    return model, result


# --- the chapter's steps -------------------------------------------------------------------------

def resolve_settings(weights, lora_rank, **given) -> dict:
    """The run's settings: each one given (not None) wins; the rest take the book's values with
    `weights` (BOOK_SETTINGS), else OFFLINE_SETTINGS. Offline LoRA first pretrains its base for
    OFFLINE_LORA_BASE_EPOCHS."""
    settings = dict(BOOK_SETTINGS if weights is not None else OFFLINE_SETTINGS)
    if weights is None and lora_rank:
        settings["base_epochs"] = OFFLINE_LORA_BASE_EPOCHS
    settings.update({k: v for k, v in given.items() if v is not None})
    return settings


def load_and_split(data_path, say=print):
    """Section 7.2: the entries (default: the book's instruction-data.json) split 85/10/5 into
    (train, test, validation); InputError when a part is empty."""
    data = load_instruction_data(data_path or asset_path("instruction-data.json"))
    train_data, test_data, val_data = split_instruction_data(data)
    say(f"{len(data)} entries: {len(train_data)} train, {len(test_data)} test, {len(val_data)} val")
    if not (train_data and test_data and val_data):
        raise InputError(f"{len(data)} entries are too few to split into train/test/validation "
                         f"({len(train_data)}/{len(test_data)}/{len(val_data)}): every part "
                         "needs at least one entry")
    return train_data, test_data, val_data


def prepare_model(weights, train_data, model_config, base_epochs, batch_size, seed, lora_rank,
                  lora_alpha, quiet=False, say=print):
    """Step 1-2: the GPT-2 (or checkpoint) `weights`, or offline the small base pretrained for
    `base_epochs`; then, with `lora_rank`, LoRA adapters (everything else frozen)."""
    if weights is None:
        model, _ = pretrain_small_base(train_data, model_config, base_epochs, batch_size,
                                       OFFLINE_SETTINGS["lr"], seed, quiet)
    else:
        model = load_base_model(weights)
    if lora_rank:
        manual_seed(seed)
        replace_linear_with_lora(model, lora_rank, lora_alpha if lora_alpha is not None else lora_rank)
    trainable = sum(p.size for p in model.parameters() if p.requires_grad)
    say(f"trainable parameters: {trainable:,} of {sum(p.size for p in model.parameters()):,}"
        + (f" (LoRA rank {lora_rank})" if lora_rank else ""))
    return model


def finetune(model, train_data, val_data, tokenizer, settings, batch_size=8, weight_decay=0.1,
             mask_prompt=False, allowed_max_length=None, seed=123, quiet=False) -> dict:
    """Sections 7.3-7.6: the loaders (seeded like the book's torch.manual_seed(123)) and the
    book's training loop, AdamW on the trainable parameters. Returns train_model's history."""
    ctx = model.cfg["context_length"]
    collate = partial(custom_collate_fn, allowed_max_length=min(allowed_max_length or ctx, ctx),
                      mask_prompt=mask_prompt)
    datasets = [InstructionDataset(d, tokenizer, with_prompt_lengths=mask_prompt)
                for d in (train_data, val_data)]
    train_loader = DataLoader(datasets[0], batch_size, shuffle=True, drop_last=True,
                              collate_fn=collate, seed=seed)
    val_loader = DataLoader(datasets[1], batch_size, shuffle=False, drop_last=False, collate_fn=collate)
    if len(train_loader) == 0:
        raise InputError(f"{len(train_data)} training entries make no full batch of {batch_size}")
    manual_seed(seed)
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=settings["lr"],
                      weight_decay=weight_decay)
    model.train()
    return train_model(model, train_loader, val_loader, optimizer, settings["num_epochs"],
                       settings["eval_freq"], settings["eval_iter"], format_input(val_data[0]),
                       tokenizer, schedule=False, quiet=quiet, sample_eos_id=END_OF_TEXT)


def save_loss_plot(history, num_epochs, path, say=print):
    """The chapter's loss plot, or None (said) without matplotlib or without evaluations."""
    if not history["train_losses"]:
        return None
    epochs = np.linspace(0, num_epochs, len(history["train_losses"])).tolist()
    try:
        return plot_losses(epochs, history["tokens_seen"], history["train_losses"],
                           history["val_losses"], path)
    except ImportError as err:
        say(f"(no plot: {err})")
        return None


def judge(responses, ollama_model, ollama_url, responses_path, quiet=False, say=print) -> dict:
    """Section 7.8: the judge's scores added to the responses (file rewritten) and summarised.
    A server failure is recorded as {"model", "error"}: everything saved so far stays."""
    try:
        scores = score_with_ollama(responses, ollama_model, ollama_url, quiet=quiet)
    except (ConnectionError, ValueError) as err:
        say(f"Ollama scoring failed: {err}")
        return {"model": ollama_model, "error": str(err)}
    for entry, score in zip(responses, scores):
        entry["ollama_score"] = score
    write_json(responses_path, responses)
    valid = [s for s in scores if s is not None]
    return {"model": ollama_model, "average": sum(valid) / len(valid) if valid else None,
            "scored": len(valid), "unparsed": len(scores) - len(valid)}


# --- the whole chapter ------------------------------------------------------------------------

def run_instruction_finetune(weights=None, data_path=None, out_dir="runs/instruct", num_epochs=None,
                             batch_size=8, lr=None, weight_decay=0.1, lora_rank=None,
                             lora_alpha=None, mask_prompt=False, allowed_max_length=None,
                             eval_freq=None, eval_iter=None, max_new_tokens=None, base_epochs=None,
                             model_config=None, ollama_model=None, ollama_url=OLLAMA_URL,
                             seed=123, quiet=False, plot=True) -> dict:
    """Book chapter 7 end to end (see the module docstring). `weights=None` is the offline mode
    (`model_config`, default OFFLINE_CONFIG, pretrained for `base_epochs` on the training
    split's text). Unset settings take the book's values with weights, faster ones offline.
    Writes into `out_dir`: loss-plot.png, instruction-data-with-response.json (test entries with
    model_response and per-entry scores), scores.json, model.safetensors (a tinygpt checkpoint,
    LoRA merged) and, with LoRA, lora.safetensors (adapters only). Returns a summary dict."""
    started = time.perf_counter()
    settings = resolve_settings(weights, lora_rank, num_epochs=num_epochs, lr=lr,
                                eval_freq=eval_freq, eval_iter=eval_iter,
                                max_new_tokens=max_new_tokens, base_epochs=base_epochs)
    say = (lambda *a: None) if quiet else print
    out_dir = pathlib.Path(out_dir)
    tokenizer = get_gpt2_tokenizer()
    train_data, test_data, val_data = load_and_split(data_path, say)
    model = prepare_model(weights, train_data, model_config, settings["base_epochs"], batch_size,
                          seed, lora_rank, lora_alpha, quiet, say)
    history = finetune(model, train_data, val_data, tokenizer, settings, batch_size, weight_decay,
                       mask_prompt, allowed_max_length, seed, quiet)
    result = {"train_losses": history["train_losses"], "val_losses": history["val_losses"],
              "tokens_seen": history["tokens_seen"], "train_seconds": history["seconds"]}
    if plot and (path := save_loss_plot(history, settings["num_epochs"], out_dir / "loss-plot.png", say)):
        result["plot"] = path

    # Section 7.7: responses for the test set, saved with the entries; the model saved.
    check_finite_state(model.named_parameters(), f"the fine-tuned model to be saved in {out_dir}")
    if lora_rank:
        result["lora"] = save_lora(out_dir / "lora.safetensors", model)
        merge_lora(model)  # one matmul per layer again; same outputs
        check_finite_state(model.named_parameters(), "the fine-tuned model with LoRA merged")
    gen_start = time.perf_counter()
    say(f"generating responses to the {len(test_data)} test entries")
    responses = generate_responses(model, test_data, tokenizer, settings["max_new_tokens"],
                                   model.cfg["context_length"], quiet=quiet)
    result["generate_seconds"] = time.perf_counter() - gen_start
    scores = {"offline": offline_scores(responses)}
    result["responses"] = write_json(out_dir / "instruction-data-with-response.json", responses)
    save_cfg = {**model.cfg, "tie_weights": bool(getattr(model, "weights_tied", False))}
    result["checkpoint"] = save_checkpoint(out_dir / "model.safetensors", model, config=save_cfg)
    if ollama_model:  # section 7.8, only when asked
        scores["ollama"] = judge(responses, ollama_model, ollama_url, result["responses"], quiet, say)
    result.update(scores=scores, seconds=time.perf_counter() - started)
    write_json(out_dir / "scores.json", {**scores, "weights": weights or "offline-small",
                                         "lora_rank": lora_rank, "mask_prompt": mask_prompt,
                                         "num_epochs": settings["num_epochs"], "seconds": result["seconds"]})
    off = scores["offline"]
    say(f"offline score on {off['num_entries']} test entries: ROUGE-L F1 {off['rouge_l_f1']:.3f}, "
        f"exact match {off['exact_match']:.1%}")
    if scores.get("ollama", {}).get("average") is not None:
        say(f"Ollama ({ollama_model}) average score: {scores['ollama']['average']:.2f}")
    return result
