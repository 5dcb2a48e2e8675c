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
    """Histograms of each layer's activations (left) and gradients (right), one line per layer,
    saved as an image at `path` (atomically). Returns the path."""
    from matplotlib.figure import Figure  # no pyplot: drawing to a file changes no global backend
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, attr, title in ((axes[0], "activations", "activation"), (axes[1], "gradients", "gradient")):
        for layer in layers:
            values = getattr(layer, attr)
            if values is None or values.size == 0:
                continue
            counts, edges = np.histogram(values, bins=50, density=True)
            spread = layer.std if attr == "activations" else layer.grad_std
            ax.plot((edges[:-1] + edges[1:]) / 2, counts, label=f"{layer.name} (std {spread:.2g})")
        ax.set_title(f"{title} distribution per layer")
        ax.set_xlabel(title)
    axes[0].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=120)
    return path
