"""Batching: a small DataLoader in the spirit of torch.utils.data.DataLoader, and the book's
`create_dataloader_v1` (ch. 2.6).

Reproducibility and resuming: the sample order of epoch `e` depends only on (seed, e); shuffling draws a
permutation from np.random.default_rng([seed, e]). Each `iter(loader)` starts the next epoch, so every
pass over the data is reshuffled, like a torch DataLoader driven by a seeded generator, and the same seed
gives the same sequence of epochs. To resume a run mid-epoch, save `loader.state_dict()` with the
checkpoint and call `loader.load_state_dict(state)` before iterating again, or drive it explicitly:

    for epoch in range(start_epoch, num_epochs):
        train_loader.set_epoch(epoch, start_batch=start_batch if epoch == start_epoch else 0)
        for input_batch, target_batch in train_loader:
            ...

`set_epoch` at the top of each epoch also keeps the training order independent of other passes over
the same loader (the book's evaluation iterates `train_loader` too).
"""
import numpy as np

from tinygpt.data.datasets import GPTDatasetV1
from tinygpt.tokenizer import get_gpt2_tokenizer
from ..errors import InputError, InputTypeError


def default_collate(items):
    """Stack a list of dataset items into a batch.

    Arrays/numbers -> one ndarray with a new leading batch axis (integers as int64, other dtypes kept);
    tuples/lists -> a tuple with one batch per field; dicts -> a dict of batches.
    """
    first = items[0]
    if isinstance(first, (tuple, list)):
        if any(len(item) != len(first) for item in items):
            raise InputError(f"dataset items have different lengths: {sorted({len(item) for item in items})}")
        return tuple(default_collate([item[k] for item in items]) for k in range(len(first)))
    if isinstance(first, dict):
        return {key: default_collate([item[key] for item in items]) for key in first}
    arrays = [np.asarray(item) for item in items]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InputError(
            f"cannot stack items of different shapes {sorted(shapes)} into one batch; "
            "pad them in a collate_fn (e.g. the book's ch. 6/7 collate functions)"
        )
    batch = np.stack(arrays)  # (batch, *item_shape)
    if batch.dtype.kind in "iu":
        batch = batch.astype(np.int64, copy=False)  # token ids and labels: one index dtype everywhere
    return batch


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


class DataLoader:
    """Iterate over `dataset` (anything with __len__ and __getitem__) in batches.

    batch_size: items per batch. shuffle: new random order each epoch. drop_last: drop a final batch
    smaller than batch_size. collate_fn: list of items -> batch (default: `default_collate`).
    seed: makes the shuffle order reproducible; None draws one at random (kept in `loader.seed`, so
    a run can still be resumed).
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, collate_fn=None, seed=None):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise InputTypeError(f"dataset must have __len__ and __getitem__, got {type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        self.seed = int(np.random.SeedSequence().entropy) if seed is None else _check_int("seed", seed, 0)
        self._epoch = 0  # the epoch the next iter() starts
        self._start_batch = 0  # batches the next iter() skips (set when resuming)
        self._progress = None  # [epoch, batches handed out] of the latest iteration while it runs

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def epoch(self) -> int:
        """The epoch number the next `iter(loader)` will start."""
        return self._epoch

    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of `epoch`, in the order they are batched: (len(dataset),) int64."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        # A fresh generator per (seed, epoch): any epoch can be reproduced without replaying earlier ones.
        return np.random.default_rng([self.seed, _check_int("epoch", epoch, 0)]).permutation(n)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next `iter(loader)` yield epoch `epoch`, starting at batch `start_batch`
        (the batches before it are skipped without loading them); later iterations continue from there."""
        self._epoch = _check_int("epoch", epoch, 0)
        self._start_batch = _check_int("start_batch", start_batch, 0)
        if self._start_batch > len(self):
            raise InputError(f"start_batch {start_batch} is past the end of an epoch of {len(self)} batches")

    def state_dict(self) -> dict:
        """Where the loader is: the seed, the epoch of the iteration in progress (or of the next one) and
        how many of its batches were handed out. `load_state_dict` continues from exactly there."""
        epoch, batch = self._progress if self._progress is not None else (self._epoch, self._start_batch)
        return {"seed": self.seed, "epoch": epoch, "batch": batch,
                "num_samples": len(self.dataset), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`: the next iteration continues that epoch at the next batch."""
        for key, mine in (("num_samples", len(self.dataset)), ("batch_size", self.batch_size)):
            if key in state and state[key] != mine:
                raise InputError(f"loader state is for {key}={state[key]}, this loader has {key}={mine}")
        self.seed = _check_int("seed", state["seed"], 0)
        self.set_epoch(state["epoch"], state["batch"])
        self._progress = None

    def __iter__(self):
        # The epoch counter moves when iteration starts (not when it ends): an abandoned pass (e.g. an
        # evaluation that reads only a few batches) still counts as an epoch, as with torch's generator.
        progress = [self._epoch, self._start_batch]
        self._epoch, self._start_batch = self._epoch + 1, 0
        self._progress = progress
        return self._batches(progress)

    def _batches(self, progress):
        epoch, start = progress
        order = self.order(epoch)
        for b in range(start, len(self)):
            indices = order[b * self.batch_size : (b + 1) * self.batch_size]
            batch = self.collate_fn([self.dataset[int(i)] for i in indices])
            progress[1] = b + 1
            yield batch
        if self._progress is progress:
            self._progress = None  # finished: state_dict() now points at the next epoch


def create_dataloader_v1(txt, batch_size=4, max_length=256, stride=128, shuffle=True, drop_last=True,
                         num_workers=0, seed=None):
    """Book ch. 2.6: GPT-2-tokenise `txt`, cut it into `GPTDatasetV1` windows and batch them.

    Yields `(input_ids, target_ids)`, each a (batch_size, max_length) int64 array. `num_workers` is
    accepted for the book's signature and must be >= 0; loading always happens in this process.
    """
    _check_int("num_workers", num_workers, 0)
    dataset = GPTDatasetV1(txt, get_gpt2_tokenizer(), max_length=max_length, stride=stride)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)
