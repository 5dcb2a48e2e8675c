"""Fine-tuning for classification (book chapter 6): model surgery, the last-token loss and
accuracy, the training loop, classifying new text, and saving/reloading a classifier.

Surgery (6.5): the 50,257-way `out_head` becomes `Linear(emb_dim, num_classes)` and every
parameter except the last transformer block, `final_norm` and the new head is frozen. Frozen
parameters cost no gradient work: the engine records an op only when one of its inputs requires
a gradient, so the frozen blocks run as plain NumPy and backward starts at the last block
(`bench/finetune.py` measures the saving).

The prediction of a message is read at its last token (6.6): under causal attention it is the
only position that has seen the whole (padded) message.
"""
import pathlib
import time

import numpy as np

from ..core.autograd import no_grad
from ..core.random import manual_seed
from ..data import DataLoader
from ..data.spam import CLASS_NAMES, SpamDataset, prepare_spam_csvs
from ..model.gpt import GPTModel
from ..nn import Linear
from ..nn import functional as F
from ..optim import AdamW
from ..tokenizer import get_gpt2_tokenizer
from ..train import loop as train_loop
from ..train import loss as train_loss
from ..train.checkpoint import (check_config_fits, read_checkpoint, read_checkpoint_header,
                                save_checkpoint)
from ..train.guard import check_finite_loss, check_finite_state, non_finite_names
from ..train.loop import check_counts
from ..train.progress import Progress
from ..errors import CheckpointError, InputError

TRAINABLE = ("last", "all", "head")  # book setup, full fine-tuning, head only


def replace_head(model, num_classes=2, trainable="last", seed=123):
    """Book 6.5 in place: a new `out_head = Linear(emb_dim, num_classes)` (with bias, seeded
    with `seed` as the book's torch.manual_seed(123)), then freezing. `trainable`: "last" (the
    book: last transformer block + final_norm + head), "all", or "head". Returns the model."""
    if trainable not in TRAINABLE:
        raise InputError(f"trainable must be one of {', '.join(TRAINABLE)}, got {trainable!r}")
    if seed is not None:
        manual_seed(seed)
    emb_dim = model.final_norm.scale.shape[0]
    model.requires_grad_(trainable == "all")
    model.out_head = Linear(emb_dim, num_classes)  # trainable by default
    if trainable == "last":
        model.trf_blocks[-1].requires_grad_(True)
        model.final_norm.requires_grad_(True)
    return model


def trainable_parameters(model):
    """The parameters the optimizer should update (those that require a gradient)."""
    return [p for p in model.parameters() if p.requires_grad]


def last_token_logits(model, input_batch):
    """(batch, tokens) ids -> (batch, num_classes) logits of the last position (book 6.6)."""
    if isinstance(model, GPTModel):
        return model(input_batch, last_only=True)[:, -1, :]  # final norm + head on one position
    return model(input_batch)[:, -1, :]


def calc_loss_batch(input_batch, target_batch, model):
    """Cross-entropy of the last-token logits against the class labels (batch,)."""
    return F.cross_entropy(last_token_logits(model, input_batch), np.asarray(target_batch))


def calc_loss_loader(data_loader, model, num_batches=None):
    """Mean batch loss over the loader or its first `num_batches` batches; NaN when empty."""
    return train_loss.calc_loss_loader(data_loader, model, num_batches, loss_fn=calc_loss_batch)


def calc_accuracy_loader(data_loader, model, num_batches=None):
    """Fraction of correctly classified examples over the loader or its first `num_batches`
    batches (book 6.6), in eval mode; the model's previous mode is restored."""
    was_training = model.training
    model.eval()
    correct = seen = 0
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    with no_grad():
        for i, (input_batch, target_batch) in enumerate(data_loader):
            if i >= num_batches:
                break
            predicted = last_token_logits(model, input_batch).data.argmax(axis=-1)  # (batch,)
            correct += int((predicted == np.asarray(target_batch)).sum())
            seen += len(predicted)
    model.train(was_training)
    return correct / seen if seen else float("nan")


def evaluate_model(model, train_loader, val_loader, eval_iter):
    """Train and validation loss over the first `eval_iter` batches of each, in eval mode."""
    return train_loop.evaluate_model(model, train_loader, val_loader, eval_iter, loss_fn=calc_loss_batch)


def train_classifier_simple(model, train_loader, val_loader, optimizer, num_epochs, eval_freq,
                            eval_iter, quiet=False, write=None, progress=None):
    """Book 6.7: train for `num_epochs`, evaluating the losses every `eval_freq` steps and the
    accuracies (over `eval_iter` batches) after each epoch. Returns (train_losses, val_losses,
    train_accs, val_accs, examples_seen). `progress`: "bar", "lines", "none" or None (a bar on a
    terminal, a plain line every 1/20 of the run otherwise); `quiet` hides it and the messages.
    A non-finite loss stops the run with a TrainingError naming the step (nothing is saved)."""
    check_counts(num_epochs=num_epochs, eval_freq=eval_freq, eval_iter=eval_iter)
    if len(train_loader) == 0:
        raise InputError("the training loader yields no batch: nothing would train")
    train_losses, val_losses, train_accs, val_accs = [], [], [], []
    examples_seen, global_step = 0, -1
    bar = Progress(num_epochs * len(train_loader), mode="none" if quiet else progress, desc="finetune")
    write = (lambda s: None) if quiet else (write or bar.write)
    start = time.perf_counter()
    try:
        for epoch in range(num_epochs):
            model.train()
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)  # evaluations iterate it too; keep the order per epoch
            for input_batch, target_batch in train_loader:
                optimizer.zero_grad()
                loss = calc_loss_batch(input_batch, target_batch, model)
                loss_value = check_finite_loss(loss, global_step + 1, "classifier fine-tuning")
                loss.backward()
                optimizer.step()
                examples_seen += input_batch.shape[0]
                global_step += 1
                tokens_per_second = examples_seen * input_batch.shape[1] / (time.perf_counter() - start)
                bar.step(loss_value, optimizer.param_groups[0]["lr"], tokens_per_second)
                if global_step % eval_freq == 0:
                    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, eval_iter)
                    check_finite_loss(train_loss, global_step, "classifier fine-tuning (evaluated)")
                    train_losses.append(train_loss)
                    val_losses.append(val_loss)
                    write(f"Ep {epoch + 1} (Step {global_step:06d}): "
                          f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
            train_accuracy = calc_accuracy_loader(train_loader, model, num_batches=eval_iter)
            val_accuracy = calc_accuracy_loader(val_loader, model, num_batches=eval_iter)
            write(f"Training accuracy: {train_accuracy * 100:.2f}% | "
                  f"Validation accuracy: {val_accuracy * 100:.2f}%")
            train_accs.append(train_accuracy)
            val_accs.append(val_accuracy)
    finally:
        bar.close()
    return train_losses, val_losses, train_accs, val_accs, examples_seen


def classify_review(text, model, tokenizer, max_length=None, pad_token_id=50256,
                    class_names=("not spam", "spam")):
    """Book 6.8: the class name of one message. It is tokenised, cut to `max_length` (and to the
    model's context) and padded to `max_length` as in training; with `max_length=None` no padding."""
    was_training = model.training
    model.eval()
    input_ids = tokenizer.encode(text)
    context_length = model.pos_emb.weight.shape[0]
    limit = context_length if max_length is None else min(max_length, context_length)
    input_ids = input_ids[:limit]
    input_ids = input_ids + [pad_token_id] * (limit - len(input_ids) if max_length is not None else 0)
    if not input_ids:
        raise InputError("classify_review got an empty message and no max_length to pad it to")
    with no_grad():
        logits = last_token_logits(model, np.asarray([input_ids], dtype=np.int64))  # (1, classes)
    model.train(was_training)
    if not np.isfinite(logits.data).all():  # argmax of NaNs is 0: a label with no meaning
        raise InputError(f"the classifier's logits for this message are not finite "
                         f"({logits.data[0].tolist()}): its weights overflow or hold NaN; "
                         "fine-tune it again with a lower learning rate")
    return class_names[int(logits.data.argmax(axis=-1)[0])]


# --- saving and reloading ---------------------------------------------------------------------
def save_classifier(path, model, **state):
    """Save a classifier with its config and head size (plus JSON `state`, e.g. max_length),
    atomically, as a tinygpt checkpoint (.safetensors); never a non-finite parameter (a
    TrainingError, the file as it was). Returns the path."""
    check_finite_state(model.named_parameters(), f"the classifier to be saved as {path}")
    cfg = {**model.cfg, "tie_weights": False}  # the new head is never tied to the embeddings
    num_classes = model.out_head.weight.shape[0]
    return save_checkpoint(path, model, config=cfg, num_classes=num_classes,
                           kind="classifier", **state)


def load_classifier(path):
    """-> (model in eval mode, state) from `save_classifier`'s file. What the file claims (the
    config, num_classes, class_names) is checked against its tensors' header shapes before the
    model is built, and its weights must be finite; state["class_names"] is always a list of at
    least num_classes strings."""
    entries, state = read_checkpoint_header(path)
    state = check_classifier_claims(path, entries, state)
    model = GPTModel(state["config"])
    replace_head(model, state["num_classes"], trainable="all", seed=None)
    model_sd, _, state = read_checkpoint(path, optimizer=False)
    bad = non_finite_names(model_sd.items())
    if bad:
        raise CheckpointError(f"{path} holds non-finite weights ({', '.join(bad[:3])}"
                              f"{' ...' if len(bad) > 3 else ''}): it cannot classify anything")
    model.load_state_dict(model_sd)
    model.eval()
    state.setdefault("class_names", list(CLASS_NAMES))
    return model, state


def check_classifier_claims(path, entries, state) -> dict:
    """Refuse a classifier file whose config, num_classes or class_names the tensors in its
    header (`entries`, from read_checkpoint_header) do not bear out; returns `state`."""
    if state.get("kind") != "classifier" or "config" not in state or "num_classes" not in state:
        raise CheckpointError(f"{path} is a tinygpt checkpoint but not a saved classifier "
                              "(it records no num_classes): fine-tune one with finetune-classify")
    cfg = check_config_fits(state["config"], entries, path)
    n = state["num_classes"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CheckpointError(f"{path}: num_classes={n!r} is not a positive int")
    for name, want in (("out_head.weight", (n, cfg["emb_dim"])), ("out_head.bias", (n,))):
        entry = entries.get(f"model.{name}")
        found = tuple(entry["shape"]) if entry else "absent"
        if found != want:
            raise CheckpointError(f"{path}: num_classes={n} needs {name} of shape {want}, the "
                                  f"file's is {found}")
    if "class_names" not in state and n != len(CLASS_NAMES):
        raise CheckpointError(f"{path}: no class_names recorded for num_classes={n}")
    names = state.get("class_names", list(CLASS_NAMES))  # files saved before they were recorded
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        raise CheckpointError(f"{path}: class_names must be a list of strings, got "
                              f"{str(names)[:80]}")
    if len(names) < n:
        raise CheckpointError(f"{path}: class_names holds {len(names)} names for num_classes={n}")
    return state


# --- the chapter's run, shared by examples/ch06_classify.py and `tinygpt finetune-classify` ---
# With GPT-2 weights: the book's setup. Offline (no weights): a small GPT from random weights.
# It has no pretrained knowledge worth freezing, so by default every layer trains (the book's
# freezing, trainable="last", would leave random embeddings in place); dropout 0.2 and a 10x
# larger learning rate suit a model trained from scratch. Its embeddings start at GPT-2's own
# initialisation (see init_embeddings_like_gpt2): that is what lets it use the rare words.
# Test accuracy on the book's split: 96.0% with seed 123 and with seed 7 (tests/test_classify.py
# holds >= 95% and the book's two section-6.8 messages).
OFFLINE_CONFIG = {"vocab_size": 50257, "context_length": 128, "emb_dim": 128, "n_heads": 4,
                  "n_layers": 2, "drop_rate": 0.2, "qkv_bias": True}
BOOK_SETUP = {"num_epochs": 5, "lr": 5e-5, "trainable": "last"}    # pretrained GPT-2 (book 6.7)
OFFLINE_SETUP = {"num_epochs": 6, "lr": 5e-4, "trainable": "all"}  # OFFLINE_CONFIG, random init
CLASSIFIER_FILE = "classifier.safetensors"


def load_base_model(weights=None, seed=123, quiet=False):
    """The model to fine-tune: GPT-2 weights (a size name such as "gpt2-small (124M)" or a local
    file/folder, via tinygpt.weights.load_gpt2) or, with `weights=None`, a fresh OFFLINE_CONFIG
    GPT seeded with `seed`, its embeddings at GPT-2's initialisation."""
    if weights is None:
        manual_seed(seed)
        return init_embeddings_like_gpt2(GPTModel(OFFLINE_CONFIG))
    from ..weights import load_gpt2
    return load_gpt2(weights, progress=not quiet)  # drop_rate 0.0, as the book's chapter 6


def init_embeddings_like_gpt2(model, tok_std=0.02, pos_std=0.01):
    """Scale a fresh GPTModel's embeddings to GPT-2's initialisation, N(0, 0.02) for tokens and
    N(0, 0.01) for positions, from the N(0, 1) of torch.nn.Embedding that the book's model keeps.

    Why, for a model trained from scratch: AdamW moves a coordinate by about `lr` per step, so
    a token seen in a handful of training messages ends training still close to its random
    N(0, 1) draw (norm ~sqrt(emb_dim)), noise that drowns what it learned; the classifier then
    leans on a few frequent cues (offline, without this, the book's "You are a winner ... $1000
    cash or a $2000 award." came out `not spam`: no "£", no phone number). Started near zero,
    every embedding is what training made of it. Returns the model."""
    model.tok_emb.weight.data *= tok_std
    model.pos_emb.weight.data *= pos_std
    return model


def run_classification(weights=None, out_dir="runs/ch06", num_epochs=None, batch_size=8, lr=None,
                       weight_decay=0.1, eval_freq=50, eval_iter=5, seed=123, trainable=None,
                       data_path=None, quiet=False, plot=True, write=print):
    """Book chapter 6 end to end: write the balanced train/validation/test CSVs (1045/149/300)
    into `out_dir`, build the datasets (padded to the longest training message, 120 tokens),
    do the model surgery, train with AdamW, measure the accuracies on the three full sets, save
    the classifier (`out_dir/classifier.safetensors`) and the loss and accuracy plots.

    `num_epochs`, `lr` and `trainable` default to the book's 5, 5e-5 and "last" with `weights`,
    else to OFFLINE_SETUP (6, 5e-4, "all", from `load_base_model`'s small GPT). Returns a dict
    with the curves, the accuracies, the paths, `seconds` and the model."""
    setup = BOOK_SETUP if weights is not None else OFFLINE_SETUP
    num_epochs = setup["num_epochs"] if num_epochs is None else num_epochs
    lr = setup["lr"] if lr is None else lr
    trainable = setup["trainable"] if trainable is None else trainable
    start = time.perf_counter()
    out_dir = pathlib.Path(out_dir)
    tokenizer = get_gpt2_tokenizer()
    csvs = prepare_spam_csvs(out_dir, source=data_path)
    model = load_base_model(weights, seed, quiet)
    context_length = model.pos_emb.weight.shape[0]
    train_dataset = SpamDataset(csvs[0], tokenizer)
    max_length = min(train_dataset.max_length, context_length)
    if max_length < train_dataset.max_length:  # longer than the model's context: cut as the book advises
        train_dataset = SpamDataset(csvs[0], tokenizer, max_length=max_length)
    val_dataset = SpamDataset(csvs[1], tokenizer, max_length=max_length)
    test_dataset = SpamDataset(csvs[2], tokenizer, max_length=max_length)
    train_loader = DataLoader(train_dataset, batch_size, shuffle=True, drop_last=True, seed=seed)
    val_loader = DataLoader(val_dataset, batch_size, shuffle=False, drop_last=False)
    test_loader = DataLoader(test_dataset, batch_size, shuffle=False, drop_last=False)
    if len(train_loader) == 0:  # zero steps would save an untrained classifier
        raise InputError(f"{len(train_dataset)} training messages make no full batch of "
                         f"{batch_size}: nothing would train (give more messages or a smaller "
                         "--batch-size)")

    replace_head(model, num_classes=2, trainable=trainable, seed=seed)
    optimizer = AdamW(trainable_parameters(model), lr=lr, weight_decay=weight_decay)
    manual_seed(seed)  # dropout masks, if the config has dropout
    train_start = time.perf_counter()
    train_losses, val_losses, train_accs, val_accs, examples_seen = train_classifier_simple(
        model, train_loader, val_loader, optimizer, num_epochs, eval_freq, eval_iter, quiet=quiet)
    train_seconds = time.perf_counter() - train_start

    accuracy = {name: calc_accuracy_loader(loader, model) for name, loader in
                (("train", train_loader), ("validation", val_loader), ("test", test_loader))}
    say = (lambda s: None) if quiet else write
    say(f"Training accuracy: {accuracy['train'] * 100:.2f}% | Validation accuracy: "
        f"{accuracy['validation'] * 100:.2f}% | Test accuracy: {accuracy['test'] * 100:.2f}%")
    result = {"model": model, "train_losses": train_losses, "val_losses": val_losses,
              "train_accs": train_accs, "val_accs": val_accs, "examples_seen": examples_seen,
              "train_accuracy": accuracy["train"], "val_accuracy": accuracy["validation"],
              "test_accuracy": accuracy["test"], "max_length": max_length,
              "train_seconds": train_seconds, "csvs": csvs}
    result["checkpoint"] = save_classifier(
        out_dir / CLASSIFIER_FILE, model, max_length=max_length, pad_token_id=50256,
        class_names=list(CLASS_NAMES), accuracy=accuracy, weights=weights,
        setup={"num_epochs": num_epochs, "batch_size": batch_size, "lr": lr,
               "weight_decay": weight_decay, "trainable": trainable, "seed": seed})
    if plot:
        result.update(_plots(out_dir, num_epochs, examples_seen, train_losses, val_losses,
                             train_accs, val_accs, say))
    result["seconds"] = time.perf_counter() - start
    return result


def _plots(out_dir, num_epochs, examples_seen, train_losses, val_losses, train_accs, val_accs, say):
    """Book 6.7's two figures: losses (every eval_freq steps) and accuracies (every epoch)."""
    from ..train.plotting import plot_values
    paths = {}
    try:
        for key, train, val, label in (("loss_plot", train_losses, val_losses, "loss"),
                                       ("accuracy_plot", train_accs, val_accs, "accuracy")):
            if train:
                epochs = np.linspace(0, num_epochs, len(train))
                examples = np.linspace(0, examples_seen, len(train))
                paths[key] = plot_values(epochs, examples, train, val, out_dir / f"{label}-plot.png",
                                         label=label, examples_label="Examples seen")
    except ImportError as err:
        say(f"(no plots: {err})")
    return paths


def resolve_classifier_path(path):
    """A classifier file, or a folder holding `classifier.safetensors`."""
    path = pathlib.Path(path)
    return path / CLASSIFIER_FILE if path.is_dir() else path
