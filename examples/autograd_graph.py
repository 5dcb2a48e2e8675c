"""Pictures of the engine at work: the autograd graph of a small MLP, a GPT's graph one box per
transformer block, and per-layer activation and gradient histograms of that GPT.

Writes into --out: mlp_graph.svg and gpt_blocks.svg (or .dot files, with how to render them, when
Graphviz's `dot` program is not installed) and gpt_activations.png. Offline, a few seconds.

    python examples/autograd_graph.py [--out runs/autograd_graph]
"""
import argparse
from pathlib import Path

import numpy as np

from tinygpt import tune_malloc
import tinygpt as tg
from tinygpt import nn, viz
from tinygpt.nn import functional as F

SMALL_GPT = {"vocab_size": 256, "context_length": 32, "emb_dim": 48, "n_heads": 4, "n_layers": 3,
             "drop_rate": 0.0, "qkv_bias": False}


def mlp_graph(out: Path) -> Path:
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = tg.randn(8, 2), np.arange(8) % 3
    loss = F.cross_entropy(model(x), y)
    dot = viz.to_dot(loss, params=dict(model.named_parameters()))
    print(f"MLP: {dot.count('[label=')} nodes (ops and leaves), {dot.count('->')} edges")
    return viz.draw_graph(loss, out / "mlp_graph.svg", params=dict(model.named_parameters()))


def gpt_pictures(out: Path):
    model = tg.GPTModel(SMALL_GPT)
    ids = np.random.default_rng(0).integers(0, SMALL_GPT["vocab_size"], (4, 16))
    with viz.record_modules(model) as calls:
        logits = model(ids)
    print(f"GPT: {viz.to_dot(logits).count('[label=')} nodes op by op, "
          f"{viz.to_dot(logits, depth=2, modules=calls).count('[label=')} with one node per block")
    graph = viz.draw_graph(logits, out / "gpt_blocks.svg", depth=2, modules=calls)
    kinds = {"Embedding", "TransformerBlock", "FastMultiHeadAttention", "MultiHeadAttention", "GELU",
             "LayerNorm", "Linear"}
    layers = viz.activation_stats(model, ids, targets=np.roll(ids, -1, axis=1), kinds=kinds)
    print(f"{'layer':26s} {'kind':22s} {'act std':>8s} {'zeros':>6s} {'grad std':>9s}")
    for layer in layers:
        if ".att." not in layer.name:  # the attention's projections: in the plot, not the table
            print(f"{layer.name:26s} {layer.kind:22s} {layer.std:8.3f} {layer.zero_fraction:6.1%} "
                  f"{layer.grad_std:9.2e}")
    return graph, viz.plot_activation_stats(layers, out / "gpt_activations.png")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/autograd_graph"))
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args(argv)
    tune_malloc()  # an application's choice: see tinygpt/core/malloc.py
    tg.manual_seed(args.seed)
    written = [mlp_graph(args.out), *gpt_pictures(args.out)]
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
