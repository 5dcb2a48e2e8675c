"""Loss and accuracy curves (book sections 5.2 and 6.7), drawn with matplotlib (a dependency of
tinygpt; an install without it gets a clear ImportError)."""
import pathlib

from ..errors import MissingDependencyError
from ..files import atomic_write


def _figure(**kwargs):
    """A matplotlib Figure not attached to pyplot: nothing process-wide (the backend, pyplot's
    list of open figures) changes, and it needs no display."""
    try:
        import matplotlib  # noqa: F401  (first: its submodules may be imported already)
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError("plotting needs matplotlib: pip install matplotlib") from None
    return Figure(**kwargs)


def plot_values(epochs_seen, examples_seen, train_values, val_values, path, label="loss",
                examples_label="Tokens seen"):
    """Train and validation curves against epochs, with examples (or tokens) seen on a twin
    x-axis, saved as an image at `path` (atomically). Returns the path."""
    fig = _figure(figsize=(5, 3))
    from matplotlib.ticker import MaxNLocator
    ax1 = fig.subplots()
    ax1.plot(epochs_seen, train_values, label=f"Training {label}")
    ax1.plot(epochs_seen, val_values, linestyle="-.", label=f"Validation {label}")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel(label.capitalize())
    ax1.legend(loc="best")  # where it covers least: upper right for losses, lower for accuracy
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2 = ax1.twiny()  # same curve against tokens seen, drawn invisibly to get the axis
    ax2.plot(examples_seen, train_values, alpha=0)
    ax2.set_xlabel(examples_label)
    fig.tight_layout()
    path = pathlib.Path(path)
    with atomic_write(path, "wb", sync=False) as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png")
    return path


def plot_losses(epochs_seen, tokens_seen, train_losses, val_losses, path="loss-plot.png"):
    """The book's chapter-5 loss plot."""
    return plot_values(epochs_seen, tokens_seen, train_losses, val_losses, path, label="loss")
