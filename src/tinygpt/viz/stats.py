"""Per-layer activation and gradient statistics: "are my activations saturating, are my gradients
vanishing?" answered from one batch, with forward hooks on every module and a gradient hook on
every module output."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.tensor import Tensor
from ..files import atomic_write
from ..nn import functional as F

SAMPLE = 4096  # values kept per layer for the histograms: enough for their shape, small for memory


@dataclass
class LayerStats:
    """One module's output on the batch (`activations`) and the gradient of the loss with respect
    to it (`gradients`, None without a loss): a float64 sample of up to SAMPLE values each, with
    mean, std and the fraction of exact zeros (dead ReLUs) measured on all values."""
    name: str
    kind: str
    shape: tuple
    mean: float
    std: float
    zero_fraction: float
    activations: np.ndarray
    grad_mean: float = None
    grad_std: float = None
    gradients: np.ndarray = None


def _sample(values: np.ndarray, rng) -> np.ndarray:
    flat = values.reshape(-1).astype(np.float64)
    return flat if flat.size <= SAMPLE else rng.choice(flat, SAMPLE, replace=False)


def _default_loss(output, targets):
    """The book's loss: cross-entropy over the flattened (batch, tokens) positions."""
    if output.ndim == 3:
        return F.cross_entropy(output.flatten(0, 1), np.asarray(targets).reshape(-1))
    return F.cross_entropy(output, targets)


def activation_stats(model, inputs, targets=None, loss_fn=None, kinds=None, seed=0) -> list:
    """[LayerStats] for each sub-module call of `model` on `inputs` (book names, in call order).
    With `targets`, `loss_fn(output, targets)` (default: cross-entropy) is backpropagated to
    fill the gradients; the parameters' `.grad` are left as they were. `kinds` ({"Linear",
    "GELU", ...}) keeps only modules of those classes."""
    rng = np.random.default_rng(seed)
    layers, outputs = [], []

    def record(name):
        def hook(module, args, output):
            if not isinstance(output, Tensor) or output.dtype.kind != "f":
                return
            data = output.data
            layers.append(LayerStats(name, type(module).__name__, tuple(data.shape), float(data.mean()),
                                     float(data.std()), float(np.mean(data == 0)), _sample(data, rng)))
            outputs.append(output)
        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in model.named_modules()
               if name and (kinds is None or type(m).__name__ in kinds)]
    saved_grads = [(p, p.grad) for p in model.parameters()]
    try:
        output = model(inputs)
        if targets is not None:
            for layer, out in zip(layers, outputs):
                if out.requires_grad:
                    out.register_hook(_gradient_recorder(layer, rng))
            (loss_fn or _default_loss)(output, targets).backward()
    finally:
        for handle in handles:
            handle.remove()
        for p, g in saved_grads:
            p.grad = g
    return layers


def _gradient_recorder(layer, rng):
    def hook(grad):
        layer.grad_mean, layer.grad_std = float(grad.mean()), float(grad.std())
        layer.gradients = _sample(grad, rng)
    return hook


def plot_activation_stats(layers, path) -> Path:
    """Histograms of each layer's activations (left) and gradients (right), one line per layer
    in the same colour in both panels, each panel with its legend (layer and std) below it,
    saved as an image at `path` (atomically). Returns the path."""
    fig = activation_stats_figure(layers)
    path = Path(path)
    with atomic_write(path, "wb") as f:  # bbox "tight": the canvas fits both legends whole
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    return path


def activation_stats_figure(layers):
    """The matplotlib Figure `plot_activation_stats` saves."""
    from matplotlib.figure import Figure  # no pyplot: drawing to a file changes no global backend
    ncol = 2 if len(layers) > 8 else 1
    legend_height = 0.3 + 0.19 * -(-len(layers) // ncol)  # inches: 6-pt rows, 0.5 spacing
    fig = Figure(figsize=(12, 4 + legend_height))
    grid = fig.add_gridspec(2, 2, height_ratios=[4, legend_height], hspace=0.25)
    styles = ["-", "--", ":", "-."]  # with 10 colours: 40 layers stay apart
    for col, attr, title in ((0, "activations", "activation"), (1, "gradients", "gradient")):
        ax, below = fig.add_subplot(grid[0, col]), fig.add_subplot(grid[1, col])
        below.axis("off")  # the legend's own space, so it neither covers curves nor squeezes them
        for i, layer in enumerate(layers):
            values = getattr(layer, attr)
            if values is None or values.size == 0:
                continue
            counts, edges = np.histogram(values, bins=50, density=True)
            spread = layer.std if attr == "activations" else layer.grad_std
            ax.plot((edges[:-1] + edges[1:]) / 2, counts, color=f"C{i % 10}",
                    linestyle=styles[i // 10 % len(styles)], label=f"{layer.name} (std {spread:.2g})")
        ax.set_title(f"{title} distribution per layer")
        ax.set_xlabel(title)
        if ax.lines:
            below.legend(*ax.get_legend_handles_labels(), fontsize=6, loc="upper center",
                         ncol=ncol, frameon=False)
    return fig
