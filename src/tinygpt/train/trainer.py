"""`train_model`: the resumable trainer behind `tinygpt pretrain` and examples/ch05_pretrain.py.
It runs the book's loop (train/loop.py's `train_model_simple`, which it matches loss for loss with
`schedule=False`) and adds appendix D (linear warm-up, cosine decay, gradient clipping), progress
output, checkpoints every N steps, signal-safe saving and exact resume.

The loop's state (`resume.fresh_loop_state`) always describes the last completed step: the
optimizer step and the bookkeeping of that step (batch position, step number, tokens, learning
rate history, the RNG state) change together inside `guard.deferred()`, where SIGINT/SIGTERM
wait (`signals.SignalGuard`). An interrupt anywhere else finds weights, optimizer and state in
agreement, and that is what is saved; an evaluation it cut short is recorded as pending and done
first on resume. So `--resume` continues bit-identically to the run that was not interrupted
(tests/test_interrupt.py)."""
import math
import time

import numpy as np

from ..core.autograd import no_grad
from ..core.random import batch_part, get_rng_state, set_rng_state
from ..errors import CheckpointError, InputError, TrainingError
from ..nn.utils import clip_grad_norm_
from ..optim.schedules import warmup_cosine_lr
from .checkpoint import check_writable, load_checkpoint, read_checkpoint_header, save_checkpoint
from .loop import evaluate_model, generate_and_print_sample
from .loss import calc_loss_batch
from .progress import Progress, compile_kernels
from .resume import (HISTORY, check_same_config, check_same_settings, checked_loop_state,
                     describe_settings, fresh_loop_state, run_settings)
from .signals import SignalGuard


def train_model(model, train_loader, val_loader, optimizer, num_epochs, eval_freq, eval_iter,
                start_context, tokenizer, schedule=True, warmup_steps=None, initial_lr=3e-5,
                min_lr=1e-6, max_grad_norm=1.0, quiet=False, checkpoint_path=None,
                checkpoint_every=None, resume_from=None, max_steps=None, sample_tokens=50,
                config=None, progress=None, warm_up_kernels=True, sample_eos_id=None,
                settings=None, grad_accum=1, data_parallel=None):
    """Train for `num_epochs`, evaluating every `eval_freq` steps and printing a sample per epoch.

    With `schedule` (appendix D) the learning rate warms up linearly from `initial_lr` to the
    optimizer's lr over `warmup_steps` (default 20% of all steps) and then decays along a cosine
    to `min_lr`; gradients are clipped to `max_grad_norm` after warm-up. Without it this is the
    chapter-5 loop exactly.

    `checkpoint_path` saves model, optimizer, loop state and RNG state every `checkpoint_every`
    steps, at the end, and on SIGINT/SIGTERM (then `signals.Interrupted` is raised; the handlers
    are installed only while this call runs, in the main thread, and the previous ones put back);
    `resume_from` continues such a checkpoint bit-identically. `num_epochs` counts all epochs, those of the
    checkpoint included. `max_steps` stops early (after saving). A non-finite loss raises
    TrainingError without saving. `progress`: "bar", "lines", "none" or None (bar on a terminal,
    plain lines otherwise; `quiet` means "none"). `warm_up_kernels` compiles the Numba kernels
    before the first step. The per-epoch sample (`sample_tokens` greedy tokens after
    `start_context`) stops at `sample_eos_id` if given. Returns a dict: train_losses, val_losses, tokens_seen, lrs,
    global_step, epoch, tokens, seconds, tokens_per_second, nothing_to_do.

    Every setting that shapes the run is saved with the checkpoint (`run_settings`: the
    optimizer's lr and weight decay, the schedule and its parameters, eval_freq, eval_iter, plus
    the caller's `settings`, e.g. pretrain's seed and batch size); `resume_from` refuses a run
    whose settings differ from the checkpoint's (InputError naming each, both values).

    `grad_accum` K: each loader batch is run as K micro-batches whose gradients add up to the
    whole batch's (one optimizer step per loader batch). `data_parallel` (tinygpt.distributed):
    this process is one of several ranks; each runs its share of every micro-batch, and the
    gradients and the loss are summed over the ranks before the step."""
    check_counts(num_epochs=num_epochs, eval_freq=eval_freq, eval_iter=eval_iter, grad_accum=grad_accum)
    check_counts(checkpoint_every=checkpoint_every, max_steps=max_steps, optional=True)
    if len(train_loader) == 0:
        raise InputError("the training loader yields no batches (text too short for one batch?)")
    if checkpoint_path is not None:
        check_writable(checkpoint_path)
    total_steps = len(train_loader) * num_epochs
    if warmup_steps is None:
        warmup_steps = int(0.2 * total_steps) if schedule else 0
    trainer = _Trainer(model, train_loader, val_loader, optimizer, dict(
        num_epochs=num_epochs, eval_freq=eval_freq, eval_iter=eval_iter, total_steps=total_steps,
        start_context=start_context, tokenizer=tokenizer, schedule=schedule,
        warmup_steps=warmup_steps, initial_lr=initial_lr, min_lr=min_lr,
        max_grad_norm=max_grad_norm, checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every, max_steps=max_steps, sample_tokens=sample_tokens,
        sample_eos_id=sample_eos_id, grad_accum=grad_accum, data_parallel=data_parallel,
        config=config, progress="none" if quiet else progress, warm_up_kernels=warm_up_kernels),
        settings)
    if resume_from is not None:
        trainer.resume(resume_from)
    return trainer.run()


def check_counts(optional=False, **counts) -> None:
    """Raise InputError naming the first argument that is not a positive int (None is allowed
    when `optional`): a count of 0 or less would train nothing and still overwrite a checkpoint."""
    for name, value in counts.items():
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


def evaluate_shared(model, train_loader, val_loader, eval_iter, dp) -> tuple:
    """`evaluate_model` with every batch's rows split over the ranks of `dp`: each rank
    evaluates its rows and weights its loss by their share of the batch, and one sum over the
    ranks gives every rank the batch means of `calc_loss_loader` (to float rounding)."""
    model.eval()
    try:
        shares = [_loss_share(model, loader, eval_iter, dp.rank, dp.size)
                  for loader in (train_loader, val_loader)]
    finally:
        model.train()
    return tuple(dp.sum(shares))


def _loss_share(model, loader, num_batches, rank, ranks) -> float:
    """This rank's part of `calc_loss_loader(loader, model, num_batches)`: its rows of each
    batch (row j of a batch of n goes to rank j * ranks // n), NaN for an empty loader."""
    if len(loader) == 0:
        return math.nan
    num_batches, total = min(num_batches, len(loader)), 0.0
    with no_grad():
        for i, (inputs, targets) in enumerate(loader):
            if i >= num_batches:
                break
            rows = len(inputs)
            first, end = -(-rank * rows // ranks), -(-(rank + 1) * rows // ranks)
            if end > first:
                loss = calc_loss_batch(inputs[first:end], targets[first:end], model).item()
                total += loss * (end - first) / rows
    return total / num_batches


class _Trainer:
    """One `train_model` call: the loop state and the steps that advance it."""

    def __init__(self, model, train_loader, val_loader, optimizer, settings: dict, extra=None):
        self.model, self.optimizer = model, optimizer
        self.train_loader, self.val_loader = train_loader, val_loader
        self.s = settings
        self.settings = run_settings(settings, optimizer, extra)  # saved, and checked on resume
        self.loop = fresh_loop_state(optimizer.param_groups[0]["lr"], len(train_loader))
        self.rng = get_rng_state()      # the RNG state that goes with self.loop
        self.resumed_from = None
        self.saved = None               # (step, path, epoch, evaluations) of the last save
        self.guard = SignalGuard()
        self.progress = None

    def resume(self, path):
        """Load a checkpoint's weights, optimizer and loop state, after checking it fits."""
        _, state = read_checkpoint_header(path)
        check_same_config(state.get("config"), self.s["config"], path)
        check_same_settings(state.get("settings"), self.settings, path)
        loop = checked_loop_state(state.get("loop"), path, len(self.train_loader))
        if "rng" not in state:
            raise CheckpointError(f"{path} records no RNG state: it cannot be resumed exactly")
        state = load_checkpoint(path, self.model, self.optimizer)
        try:
            set_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: bad or missing RNG state ({err})") from None
        self.loop, self.rng, self.resumed_from = loop, get_rng_state(), path
        self.saved = self.save_key(path)
        print(f"resuming {path} after step {loop['global_step']} (epoch {loop['epoch'] + 1}) "
              f"with its settings: {describe_settings(self.settings)}")

    def run(self) -> dict:
        if self.loop["epoch"] >= self.s["num_epochs"]:
            print(f"nothing to do: {self.resumed_from} already has {self.loop['epoch']} of "
                  f"{self.s['num_epochs']} epochs")
            return self.result(0.0, self.loop["tokens"], nothing_to_do=True)
        if self.s["warm_up_kernels"]:
            compile_kernels(next(iter(self.model.parameters())).dtype,
                            notify=self.s["progress"] != "none")  # --quiet: no notice either
        self.progress = Progress(self.s["total_steps"], self.loop["global_step"] + 1,
                                 self.s["progress"])
        self.start, self.start_tokens = time.perf_counter(), self.loop["tokens"]
        if self.s["data_parallel"] is not None:   # every rank starts from rank 0's weights
            self.s["data_parallel"].broadcast_parameters(self.model.parameters())
        self.model.train()
        with self.guard:
            try:
                self.train_epochs()
                self.save()
            except KeyboardInterrupt as err:  # SIGINT or SIGTERM: keep the last completed step
                with self.guard.deferred(raise_pending=False):
                    self.save()
                if self.saved is not None:  # where the caller can tell the user to resume from
                    err.checkpoint, err.steps_done = self.saved[1], self.saved[0] + 1
                raise
            finally:
                self.progress.close()
        return self.result(time.perf_counter() - self.start, self.start_tokens)

    def train_epochs(self):
        """The book's loop (section 5.2), entered at the last completed step."""
        loop, s = self.loop, self.s
        if loop["pending_eval"]:  # the run stopped during this evaluation: do it now
            self.evaluate()
        while loop["epoch"] < s["num_epochs"]:
            for input_batch, target_batch in self.remaining_batches():
                if s["max_steps"] is not None and loop["global_step"] + 1 >= s["max_steps"]:
                    return
                self.train_step(input_batch, target_batch)
                if loop["pending_eval"]:
                    self.evaluate()
                if s["checkpoint_every"] and (loop["global_step"] + 1) % s["checkpoint_every"] == 0:
                    self.save()
            if s["sample_tokens"] and s["tokenizer"] is not None and s["start_context"]:
                generate_and_print_sample(self.model, s["tokenizer"], s["start_context"],
                                          s["sample_tokens"], self.progress.write,
                                          eos_id=s["sample_eos_id"])
            with self.guard.deferred():
                loop["epoch"] += 1
                loop["batch"] = 0
                self.rng = get_rng_state()

    def remaining_batches(self):
        """This epoch's batches after the `loop["batch"]` already trained on."""
        loader = self.train_loader
        if hasattr(loader, "set_epoch"):  # the order is a function of (seed, epoch) alone
            loader.set_epoch(self.loop["epoch"], start_batch=self.loop["batch"])
            return iter(loader)
        return (b for i, b in enumerate(loader) if i >= self.loop["batch"])

    def train_step(self, input_batch, target_batch):
        loop, s = self.loop, self.s
        step = loop["global_step"] + 1
        lr = self.set_learning_rate(step)
        self.optimizer.zero_grad()
        loss_value = self.forward_backward(input_batch, target_batch, step, lr)
        if s["schedule"] and step >= s["warmup_steps"] and s["max_grad_norm"] is not None:
            norm = clip_grad_norm_(self.model.parameters(), s["max_grad_norm"])
            if not math.isfinite(norm):
                raise TrainingError(self.divergence(step, f"the gradient norm is {norm}", lr))
        with self.guard.deferred():  # weights, optimizer state and loop state move together
            self.optimizer.step()
            loop["global_step"] = step
            loop["batch"] += 1
            loop["tokens"] += int(np.asarray(input_batch).size)
            loop["lrs"].append(lr)
            loop["pending_eval"] = step % s["eval_freq"] == 0
            self.rng = get_rng_state()
        elapsed = time.perf_counter() - self.start
        self.progress.step(loss_value, lr, (loop["tokens"] - self.start_tokens) / max(elapsed, 1e-9))

    def forward_backward(self, input_batch, target_batch, step, lr) -> float:
        """The batch's mean loss, its gradients left in the parameters. The batch runs in parts:
        `grad_accum` micro-batches, each split over the ranks; a part's loss is weighted by its
        share of the batch, so the gradients sum to the whole batch's, and every part starts
        from the step's generator state (core.random.batch_part: the same dropout masks)."""
        dp, rows = self.s["data_parallel"], len(input_batch)
        rank, ranks = (dp.rank, dp.size) if dp is not None else (0, 1)
        parts = self.s["grad_accum"] * ranks
        if rows % parts:
            raise InputError(f"a batch of {rows} samples cannot be split into {parts} equal parts "
                             f"({self.s['grad_accum']} micro-batches x {ranks} ranks)")
        size, rng, total = rows // parts, get_rng_state(), 0.0
        for first in range(rank * size, rows, ranks * size):   # this rank's part of each micro-batch
            set_rng_state(rng)
            with batch_part(first, size):
                loss = calc_loss_batch(input_batch[first:first + size],
                                       target_batch[first:first + size], self.model)
            if parts > 1:
                loss = loss * (size / rows)
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingError(self.divergence(step, f"the training loss is {value}", lr))
            loss.backward()
            total += value
        if dp is not None:
            total = dp.all_reduce(self.model.parameters(), total)
        return total

    def set_learning_rate(self, step) -> float:
        s = self.s
        if s["schedule"]:
            lr = warmup_cosine_lr(step, s["total_steps"], s["warmup_steps"], self.loop["peak_lr"],
                                  s["initial_lr"], s["min_lr"])
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        return self.optimizer.param_groups[0]["lr"]

    def evaluate(self):
        loop = self.loop
        if hasattr(self.train_loader, "set_epoch"):
            # evaluate on this epoch's first batches: a function of (seed, epoch) only,
            # so a resumed run evaluates exactly what an uninterrupted one does
            self.train_loader.set_epoch(loop["epoch"])
        if self.s["data_parallel"] is None:
            train_loss, val_loss = evaluate_model(self.model, self.train_loader, self.val_loader,
                                                  self.s["eval_iter"])
        else:
            train_loss, val_loss = evaluate_shared(self.model, self.train_loader, self.val_loader,
                                                   self.s["eval_iter"], self.s["data_parallel"])
        # (an empty validation loader gives NaN by the book's convention: not a divergence)
        for name, value in (("training", train_loss), ("validation", val_loss)):
            if not math.isfinite(value) and (name == "training" or len(self.val_loader)):
                raise TrainingError(self.divergence(loop["global_step"], f"the evaluated {name} "
                                                    f"loss is {value}", self.optimizer.param_groups[0]["lr"]))
        with self.guard.deferred():
            loop["train_losses"].append(train_loss)
            loop["val_losses"].append(val_loss)
            loop["tokens_seen"].append(loop["tokens"])
            loop["pending_eval"] = False
            self.rng = get_rng_state()
            self.progress.write(f"Ep {loop['epoch'] + 1} (Step {loop['global_step']:06d}): "
                                f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")

    def save(self):
        """Checkpoint the last completed step (once per step), never non-finite weights."""
        path, step = self.s["checkpoint_path"], self.loop["global_step"]
        if path is None or self.saved == self.save_key(path):
            return
        try:  # save_checkpoint refuses NaN or inf weights and optimizer moments
            save_checkpoint(path, self.model, self.optimizer, loop=self.loop, rng=self.rng,
                            config=self.s["config"], settings=self.settings)
        except TrainingError as err:
            raise TrainingError(self.divergence(step, str(err).split(";")[0],
                                                self.optimizer.param_groups[0]["lr"])) from None
        self.saved = self.save_key(path)

    def save_key(self, path):
        loop = self.loop
        return (loop["global_step"], str(path), loop["epoch"], len(loop["train_losses"]))

    def divergence(self, step, what, lr) -> str:
        kept = (f"the last checkpoint, {self.saved[1]} (step {self.saved[0]}), is kept"
                if self.saved else "no checkpoint was written")
        return (f"step {step}: {what}; training diverged and stops here ({kept}). Try a lower "
                f"learning rate (this step used {lr:.3g}) or gradient clipping (schedule=True, "
                "`--schedule`).")

    def result(self, seconds, tokens_at_start, nothing_to_do=False) -> dict:
        loop = self.loop
        tokens = loop["tokens"] - tokens_at_start
        return {**{k: loop[k] for k in (*HISTORY, "global_step", "epoch", "tokens")},
                "seconds": seconds, "nothing_to_do": nothing_to_do,
                "tokens_per_second": tokens / seconds if seconds > 0 else math.nan}
