"""Book chapter 3, "Coding attention mechanisms", on tinygpt.

    python examples/ch03_attention.py [--out runs/ch03]

Walks the chapter on the book's six 3-d embeddings of "Your journey starts with one step":
simplified self-attention (3.3.1), SelfAttention_v1/v2 (3.4), causal attention with dropout
(3.5) and multi-head attention (3.6), printing the book's numbers: tg.manual_seed(123) gives the
modules the initial weights torch.manual_seed(123) gives the book's (listing 3.1's SelfAttention_v1
prints [[0.2996, 0.8053], ...]). Dropout masks come from tinygpt's own stream, so the dropout
example's zeros fall elsewhere than in the book's printout. Then it draws the attention
weights of the sentence (plain and causal) as a heatmap, written to --out/attention-weights.png
(default runs/ch03/attention-weights.png) with matplotlib (a dependency of tinygpt); without it the weights are still printed and nothing is written.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tinygpt as tg  # noqa: E402
from tinygpt import tune_malloc  # noqa: E402
from tinygpt.files import atomic_write  # noqa: E402
from tinygpt.model import (  # noqa: E402
    CausalAttention,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttention_v1,
    SelfAttention_v2,
)

WORDS = ["Your", "journey", "starts", "with", "one", "step"]
inputs = tg.tensor([[0.43, 0.15, 0.89],   # Your     (x^1)
                    [0.55, 0.87, 0.66],   # journey  (x^2)
                    [0.57, 0.85, 0.64],   # starts   (x^3)
                    [0.22, 0.58, 0.33],   # with     (x^4)
                    [0.77, 0.25, 0.10],   # one      (x^5)
                    [0.05, 0.80, 0.55]])  # step     (x^6)


def fmt(t) -> str:
    return np.array2string(np.asarray(t.data if isinstance(t, tg.Tensor) else t), precision=4,
                           floatmode="fixed", suppress_small=True)  # 4 decimals, as torch prints


def simplified_attention():
    """Section 3.3.1: scores are dot products of the raw embeddings."""
    attn_scores = inputs @ inputs.T                     # (6, 6)
    attn_weights = attn_scores.softmax(dim=-1)          # (6, 6), rows sum to 1
    context_vecs = attn_weights @ inputs                # (6, 3)
    print("3.3.1 attention weights (each row sums to 1):\n" + fmt(attn_weights))
    print("3.3.1 context vectors:\n" + fmt(context_vecs))
    return attn_weights.data


def trainable_attention():
    """Sections 3.4-3.6: the modules, with the book's d_in=3, d_out=2."""
    d_in, d_out = inputs.shape[1], 2
    tg.manual_seed(123)
    print("3.4.1 SelfAttention_v1 context vectors:\n" + fmt(SelfAttention_v1(d_in, d_out)(inputs)))
    tg.manual_seed(789)
    sa_v2 = SelfAttention_v2(d_in, d_out)
    print("3.4.2 SelfAttention_v2 context vectors:\n" + fmt(sa_v2(inputs)))

    # 3.5.1: hide the future with -inf above the diagonal, then softmax (built once, np.triu)
    queries, keys = sa_v2.W_query(inputs), sa_v2.W_key(inputs)  # (6, 2) each
    attn_scores = queries @ keys.T                               # (6, 6)
    mask = np.triu(np.ones((6, 6), bool), k=1)                   # True = a future token
    masked = attn_scores.masked_fill(mask, -np.inf)              # (6, 6)
    causal_weights = (masked / keys.shape[-1] ** 0.5).softmax(dim=-1)  # (6, 6)
    print("3.5.1 causal attention weights:\n" + fmt(causal_weights))
    tg.manual_seed(123)
    dropout = tg.nn.Dropout(0.5)                         # training mode: drops and rescales by 2
    print("3.5.2 dropout(0.5) on a 6x6 matrix of ones (tinygpt's dropout stream: the zeros are "
          "not where the book's are; about half are zero, the rest 2):\n"
          + fmt(dropout(tg.ones(6, 6))))

    batch = tg.stack([inputs, inputs], dim=0)           # (2, 6, 3)
    tg.manual_seed(123)
    ca = CausalAttention(d_in, d_out, batch.shape[1], 0.0)
    print(f"3.5.3 CausalAttention context_vecs.shape: {ca(batch).shape}")
    tg.manual_seed(123)
    mha_w = MultiHeadAttentionWrapper(d_in, d_out, batch.shape[1], 0.0, num_heads=2)
    out = mha_w(batch)
    print(f"3.6.1 MultiHeadAttentionWrapper context_vecs.shape: {out.shape}\n" + fmt(out))
    tg.manual_seed(123)
    mha = MultiHeadAttention(d_in, d_out, batch.shape[1], 0.0, num_heads=2)
    out = mha(batch)
    print(f"3.6.2 MultiHeadAttention context_vecs.shape: {out.shape}\n" + fmt(out))
    return causal_weights.data


def save_heatmap(panels, out_dir) -> str:
    """Draw each (title, (6, 6) weights) panel; returns the PNG path, or None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib): no heatmap drawn; "
              "the weights are printed above.")
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6))
    for ax, (title, weights) in zip(np.atleast_1d(axes), panels):
        im = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=float(weights.max()))
        ax.set_xticks(range(len(WORDS)), WORDS, rotation=45, ha="right")
        ax.set_yticks(range(len(WORDS)), WORDS)
        ax.set_xlabel("key (attended to)")
        ax.set_ylabel("query")
        ax.set_title(title)
        for i in range(weights.shape[0]):
            for j in range(weights.shape[1]):
                ax.text(j, i, f"{weights[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if weights[i, j] < 0.6 * weights.max() else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = os.path.join(out_dir, "attention-weights.png")
    try:
        with atomic_write(path, "wb") as f:  # complete or absent, never half a PNG
            fig.savefig(f, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/ch03",
                        help="directory for attention-weights.png (default runs/ch03)")
    args = parser.parse_args(argv)
    tune_malloc()  # an application's choice: see tinygpt/core/malloc.py
    plain = simplified_attention()
    causal = trainable_attention()
    path = save_heatmap([("3.3.1 simplified self-attention", plain),
                         ("3.5.1 causal attention (SelfAttention_v2)", causal)], args.out)
    if path:
        print(f"attention heatmap written to {path}")


if __name__ == "__main__":
    main()
