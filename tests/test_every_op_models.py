"""The every-op table's rows for the ops the new model families compose from existing Functions
(test_every_op.py is keyed by Function class, and these add none): sliding-window attention
(Gemma 3, Olmo 3) and the mixture-of-experts feed-forward (Qwen3 MoE) with its routing. Each
runs through `check_op` against a PyTorch transcription in float32 and float64 (forward, then
every input's gradient under a random cotangent) and through `fd_check` (float64 central
differences), as the table's rows do.

Already covered elsewhere, not repeated here: tests/test_gemma3.py checks sliding_window_attention
against PyTorch in both dtypes with grouped queries and windows shorter than the keys
(test_sliding_window_attention_against_torch) and by finite differences without grouping
(test_sliding_window_attention_finite_differences); tests/test_moe.py checks MoEFeedForward in
float64 against the book's dense layer (output, input and parameter gradients) and by finite
differences with respect to its input only. Added here: finite differences through grouped
queries with a window shorter than both the queries and the cached keys, and the MoE layer as a
function of its input AND its weights (the router `gate` included, so the gradient of the
routing probabilities is checked), in float32 as well as float64."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from helpers import check_op, fd_check, functions_in_graph
from tinygpt.model import MoEFeedForward, sliding_window_attention
from tinygpt.ops.activations import Softmax

EMB, EXPERTS, TOP_K, HIDDEN = 6, 5, 2, 4


def torch_window_attention(q, k, v, scale, window):
    """Causal attention of q (b, H, T, hd) over k, v (b, G, L, hd), query i at position L - T + i,
    each query seeing its last `window` keys."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    t, n = q.shape[2], k.shape[2]
    pos_q, pos_k = torch.arange(n - t, n)[:, None], torch.arange(n)[None, :]
    hidden = (pos_k > pos_q) | (pos_q - pos_k >= window)
    return torch.softmax((q @ k.transpose(-2, -1) * scale).masked_fill(hidden, float("-inf")), -1) @ v


def window_inputs(dtype, t=5, length=8):
    rng = np.random.default_rng(t * 10 + length)
    q = rng.standard_normal((2, 4, t, 3)).astype(dtype)                  # H = 4 query heads
    k, v = (rng.standard_normal((2, 2, length, 3)).astype(dtype) for _ in range(2))  # G = 2
    return [q, k, v]


@pytest.mark.parametrize("t,length,window", [(5, 8, 3), (6, 6, 2), (1, 7, 4)])
def test_sliding_window_attention_grouped_queries_short_window(t, length, window):
    for dtype in (np.float32, np.float64):
        check_op(lambda q, k, v: sliding_window_attention(q, k, v, 0.6, window),
                 lambda q, k, v: torch_window_attention(q, k, v, 0.6, window),
                 window_inputs(dtype, t, length), name=f"sliding_window_attention {np.dtype(dtype)}")
    fd_check(lambda q, k, v: sliding_window_attention(q, k, v, 0.6, window),
             window_inputs(np.float64, t, length), name="sliding_window_attention")


def moe_inputs(dtype, seed=0):
    """x (2, 3, EMB), the router's weight (EXPERTS, EMB) and the experts' fc1/fc2 (EXPERTS,
    HIDDEN, EMB) and fc3 (EXPERTS, EMB, HIDDEN). The router weight is large, so each token's
    k-th and (k+1)-th router probabilities stay apart: top-k selection is piecewise constant and
    a finite difference must not cross from one piece to another."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, EMB))
    gate = 2.0 * rng.standard_normal((EXPERTS, EMB))
    ranked = np.sort(TF.softmax(torch.from_numpy(x.reshape(-1, EMB) @ gate.T), -1).numpy(), -1)
    assert (ranked[:, -TOP_K] - ranked[:, -TOP_K - 1]).min() > 1e-3, "routing near a tie"
    w1, w2 = (rng.standard_normal((EXPERTS, HIDDEN, EMB)) * 0.5 for _ in range(2))
    w3 = rng.standard_normal((EXPERTS, EMB, HIDDEN)) * 0.5
    return [a.astype(dtype) for a in (x, gate, w1, w2, w3)]


def tinygpt_moe(x, gate, w1, w2, w3):
    """MoEFeedForward itself, its weights set to the given tensors (so each gets a gradient)."""
    layer = MoEFeedForward({"emb_dim": EMB, "num_experts": EXPERTS, "num_experts_per_tok": TOP_K,
                            "moe_intermediate_size": HIDDEN})
    layer.gate.weight = gate
    for e in range(EXPERTS):
        layer.fc1[e].weight, layer.fc2[e].weight, layer.fc3[e].weight = w1[e], w2[e], w3[e]
    return layer(x)


def torch_moe(x, gate, w1, w2, w3):
    """Qwen3 MoE as transformers' Qwen3MoeSparseMoeBlock computes it: softmax router, top-k,
    renormalised weights, each expert's SwiGLU on its tokens, the weighted outputs summed."""
    b, t, emb = x.shape
    x_flat = x.reshape(-1, emb)                                           # (N, emb)
    probs = torch.softmax(x_flat @ gate.T, dim=-1)                        # (N, X)
    weights, chosen = torch.topk(probs, TOP_K, dim=-1)                    # (N, k) each
    weights = weights / weights.sum(-1, keepdim=True)
    y = torch.zeros_like(x_flat)
    for e in range(EXPERTS):
        token, slot = torch.nonzero(chosen == e, as_tuple=True)
        h = TF.silu(x_flat[token] @ w1[e].T) * (x_flat[token] @ w2[e].T)  # (n_e, hidden)
        y = y.index_add(0, token, (h @ w3[e].T) * weights[token, slot][:, None])
    return y.reshape(b, t, emb)


@pytest.mark.parametrize("seed", [0, 1])
def test_moe_layer_with_its_routing_against_torch_and_finite_differences(seed):
    graphs = set()

    def recorded(*args):
        out = tinygpt_moe(*args)
        graphs.update(functions_in_graph(out))
        return out
    for dtype in (np.float32, np.float64):
        check_op(recorded, torch_moe, moe_inputs(dtype, seed), name=f"MoEFeedForward {np.dtype(dtype)}")
    assert Softmax in graphs, "the router's softmax is not in the graph: routing gets no gradient"
    fd_check(tinygpt_moe, moe_inputs(np.float64, seed), name="MoEFeedForward")
