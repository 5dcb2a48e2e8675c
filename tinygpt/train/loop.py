"""The pretraining loops: `train_model_simple` (book section 5.2) and `train_model` (appendix D:
linear warm-up, cosine decay, gradient clipping), sharing one loop that adds a progress bar,
checkpoints and exact resume."""
import math
import time

from tqdm.auto import tqdm

from ..core.random import get_rng_state, set_rng_state
from ..model.generate import generate, text_to_token_ids, token_ids_to_text
from ..model.gpt import GPTModel
from ..nn.utils import clip_grad_norm_
from ..optim.schedules import warmup_cosine_lr
from .checkpoint import load_checkpoint, save_checkpoint
from .loss import calc_loss_batch, calc_loss_loader


def evaluate_model(model, train_loader, val_loader, eval_iter, loss_fn=None):
    """Train and validation loss over the first `eval_iter` batches of each, in eval mode."""
    model.eval()
    train_loss = calc_loss_loader(train_loader, model, num_batches=eval_iter, loss_fn=loss_fn)
    val_loss = calc_loss_loader(val_loader, model, num_batches=eval_iter, loss_fn=loss_fn)
    model.train()
    return train_loss, val_loss


def generate_and_print_sample(model, tokenizer, start_context, max_new_tokens=50, write=print):
    """Greedy continuation of `start_context`, printed on one line (section 5.1.3).

    The book calls `generate_text_simple`; `generate` at temperature 0 picks the same tokens
    (tests/test_generate.py) and, through the KV cache, takes ~1 s instead of ~4 s for 50 tokens
    of the 124M model, ten times per chapter-5 run."""
    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    encoded = text_to_token_ids(start_context, tokenizer)
    token_ids = generate(model, encoded, max_new_tokens, context_size,
                         use_cache=isinstance(model, GPTModel))
    text = token_ids_to_text(token_ids, tokenizer).replace("\n", " ")
    write(text)
    model.train()
    return text


def train_model_simple(model, train_loader, val_loader, optimizer, num_epochs, eval_freq, eval_iter,
                       start_context, tokenizer, **options):
    """The book's chapter-5 loop: returns (train_losses, val_losses, track_tokens_seen).
    `options` are those of `train_model` (quiet, checkpoint_path, resume_from, ...)."""
    result = train_model(model, train_loader, val_loader, optimizer, num_epochs, eval_freq, eval_iter,
                         start_context, tokenizer, schedule=False, **options)
    return result["train_losses"], result["val_losses"], result["tokens_seen"]


def train_model(model, train_loader, val_loader, optimizer, num_epochs, eval_freq, eval_iter,
                start_context, tokenizer, schedule=True, warmup_steps=None, initial_lr=3e-5,
                min_lr=1e-6, max_grad_norm=1.0, quiet=False, checkpoint_path=None,
                checkpoint_every=None, resume_from=None, max_steps=None, sample_tokens=50,
                config=None):
    """Train for `num_epochs`, evaluating every `eval_freq` steps and printing a sample per epoch.

    With `schedule` (appendix D) the learning rate warms up linearly from `initial_lr` to the
    optimizer's lr over `warmup_steps` (default 20% of all steps) and then decays along a cosine
    to `min_lr`; gradients are clipped to `max_grad_norm` after warm-up. Without it this is the
    chapter-5 loop exactly.

    `checkpoint_path` saves model, optimizer, loop position, history and RNG state every
    `checkpoint_every` steps and at the end; `resume_from` continues such a checkpoint so that
    the losses equal an uninterrupted run's. `max_steps` stops early (after saving).
    Returns a dict: train_losses, val_losses, tokens_seen, lrs, global_step, epoch, seconds."""
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * num_epochs
    peak_lr = optimizer.param_groups[0]["lr"]
    if warmup_steps is None:
        warmup_steps = int(0.2 * total_steps) if schedule else 0
    loop = {"epoch": 0, "batch": 0, "global_step": -1, "tokens": 0, "peak_lr": peak_lr,
            "train_losses": [], "val_losses": [], "tokens_seen": [], "lrs": []}
    if resume_from is not None:
        saved = load_checkpoint(resume_from, model, optimizer)
        loop.update(saved["loop"])
        set_rng_state(saved["rng"])
        peak_lr = loop["peak_lr"]

    def checkpoint():
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, optimizer, loop=loop, rng=get_rng_state(),
                            config=config)

    bar = tqdm(total=total_steps, initial=loop["global_step"] + 1, disable=quiet, unit="step",
               dynamic_ncols=True, desc="train")
    write = print if quiet else bar.write  # quiet: no progress bar; evaluations still print
    start, tokens_at_start = time.perf_counter(), loop["tokens"]
    model.train()
    try:
        while loop["epoch"] < num_epochs:
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(loop["epoch"])
            for i, (inputs, targets) in enumerate(train_loader):
                if i < loop["batch"]:
                    continue  # resuming mid-epoch: these batches were trained on before the stop
                if max_steps is not None and loop["global_step"] + 1 >= max_steps:
                    return _finish(loop, start, tokens_at_start, checkpoint)
                loop["global_step"] += 1
                step = loop["global_step"]
                if schedule:
                    lr = warmup_cosine_lr(step, total_steps, warmup_steps, peak_lr, initial_lr, min_lr)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                lr = optimizer.param_groups[0]["lr"]
                loop["lrs"].append(lr)
                optimizer.zero_grad()
                loss = calc_loss_batch(inputs, targets, model)
                loss.backward()
                if schedule and step >= warmup_steps and max_grad_norm is not None:
                    clip_grad_norm_(model.parameters(), max_grad_norm)
                optimizer.step()
                loop["tokens"] += inputs.size
                loop["batch"] = i + 1
                elapsed = time.perf_counter() - start
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}",
                                tok_s=f"{(loop['tokens'] - tokens_at_start) / max(elapsed, 1e-9):.0f}")
                if step % eval_freq == 0:
                    if hasattr(train_loader, "set_epoch"):
                        # evaluate on this epoch's first batches: a function of (seed, epoch) only,
                        # so a resumed run evaluates exactly what an uninterrupted one does
                        train_loader.set_epoch(loop["epoch"])
                    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, eval_iter)
                    loop["train_losses"].append(train_loss)
                    loop["val_losses"].append(val_loss)
                    loop["tokens_seen"].append(loop["tokens"])
                    write(f"Ep {loop['epoch'] + 1} (Step {step:06d}): "
                          f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
                if checkpoint_every and (step + 1) % checkpoint_every == 0:
                    checkpoint()
            if sample_tokens and tokenizer is not None and start_context:
                generate_and_print_sample(model, tokenizer, start_context, sample_tokens, write)
            loop["epoch"] += 1
            loop["batch"] = 0
    except KeyboardInterrupt:
        checkpoint()  # keep the work done so far; --resume continues from here
        raise
    finally:
        bar.close()
    return _finish(loop, start, tokens_at_start, checkpoint)


def _finish(loop, start, tokens_at_start, checkpoint):
    checkpoint()
    seconds = time.perf_counter() - start
    tokens = loop["tokens"] - tokens_at_start
    return {**{k: loop[k] for k in ("train_losses", "val_losses", "tokens_seen", "lrs", "global_step", "epoch")},
            "seconds": seconds, "tokens_per_second": tokens / seconds if seconds > 0 else math.nan}
