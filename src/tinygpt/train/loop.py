"""The book's chapter-5 training loop (section 5.2): `evaluate_model`, `generate_and_print_sample`
and `train_model_simple`, as the chapter lists them.

`train_model_simple` is the plain loop a reader steps through: no schedule, no checkpoints, no
progress bar. The resumable trainer that `tinygpt pretrain` and examples/ch05_pretrain.py use
(checkpoints every N steps, signal-safe saving, exact resume, appendix D's warm-up, cosine decay
and clipping, progress output) is `train_model` in train/trainer.py; with `schedule=False` it
trains to the same losses as this loop (tests/test_book_loop.py)."""
from ..model.generate import CACHED_MODELS, generate, text_to_token_ids, token_ids_to_text
from .guard import check_finite_loss
from .loss import calc_loss_batch, calc_loss_loader


def train_model_simple(model, train_loader, val_loader, optimizer, num_epochs, eval_freq, eval_iter,
                       start_context, tokenizer):
    """The book's loop: returns (train_losses, val_losses, track_tokens_seen). Stops with a
    TrainingError at the first non-finite loss. `train_loader` is a tinygpt DataLoader
    (`create_dataloader_v1`); its `set_epoch` keeps epoch e's order a function of (seed, e) alone,
    although the evaluation iterates the same loader (`train_model` does the same)."""
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        train_loader.set_epoch(epoch)
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch, model)
            check_finite_loss(loss, global_step + 1)
            loss.backward()
            optimizer.step()
            tokens_seen += input_batch.size
            global_step += 1
            if global_step % eval_freq == 0:
                train_loader.set_epoch(epoch)  # evaluate on this epoch's first batches
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): "
                      f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
        generate_and_print_sample(model, tokenizer, start_context)
    return train_losses, val_losses, track_tokens_seen


def evaluate_model(model, train_loader, val_loader, eval_iter, loss_fn=None):
    """Train and validation loss over the first `eval_iter` batches of each, in eval mode."""
    model.eval()
    try:
        train_loss = calc_loss_loader(train_loader, model, num_batches=eval_iter, loss_fn=loss_fn)
        val_loss = calc_loss_loader(val_loader, model, num_batches=eval_iter, loss_fn=loss_fn)
    finally:  # an interrupted evaluation leaves the model training, as it found it
        model.train()
    return train_loss, val_loss


def generate_and_print_sample(model, tokenizer, start_context, max_new_tokens=50, write=print,
                              eos_id=None):
    """Greedy continuation of `start_context`, printed on one line with newlines as spaces, as
    the book prints it (section 5.1.3); with `eos_id` it stops at that token (chapter 7's samples
    end at <|endoftext|>). Returns the printed text.

    The book calls `generate_text_simple`; `generate` at temperature 0 picks the same tokens
    (tests/test_generate.py) and reuses keys and values through the KV cache where the model has
    one (GPTModel, Qwen3Model, Llama3Model), a few times faster (bench/generate.py)."""
    model.eval()
    cfg = getattr(model, "cfg", None)
    context_size = cfg["context_length"] if cfg else model.pos_emb.weight.shape[0]
    encoded = text_to_token_ids(start_context, tokenizer)
    token_ids = generate(model, encoded, max_new_tokens, context_size, eos_id=eos_id,
                         use_cache=isinstance(model, CACHED_MODELS))
    decoded_text = token_ids_to_text(token_ids, tokenizer)
    write(decoded_text.replace("\n", " "))  # the book's line, trailing spaces included
    model.train()
    return decoded_text.replace("\n", " ")
