"""Mixture of experts: Qwen3 MoE (the book repository's `ch05/11_qwen3` MoE configs and its
`ch04/07_moe` bonus section). `MoEFeedForward` replaces the SwiGLU feed-forward of each block:

* a router (`gate`, Linear emb -> num_experts) scores every expert for every token;
* each token goes to its num_experts_per_tok best experts (top-k of the softmax over all
  experts; with norm_topk_prob those k probabilities are renormalised to sum to 1, which is the
  book's softmax over the top-k scores);
* each expert is a SwiGLU feed-forward (fc1[e], fc2[e], fc3[e]) of width moe_intermediate_size;
* the output is the probability-weighted sum of the chosen experts' outputs.

Only the chosen experts compute: the (token, slot) pairs are sorted by expert, each expert runs
on the rows gathered for it, and the results are put back in (token, slot) order by one
inverse permutation (a gather whose backward scatters). The router's load-balancing statistics
of the last forward are kept in `router_stats`, with the Switch Transformer's auxiliary loss.

`Qwen3MoeModel` is Qwen3Model (qwen3.py) with this feed-forward, its state dict named as the
book's Qwen3Model with a MoE config (`ff.gate`, `ff.fc1.{e}` ...).
"""
import numpy as np

from ..errors import InputError, InputKeyError
from ..nn import Linear, Module, ModuleList
from ..ops import cat, silu, softmax
from .qwen3 import Qwen3Model

# Qwen3-30B-A3B: 128 experts of width 768 per block, 8 chosen per token (3.3B of 30.5B active)
QWEN3_MOE_CONFIG_30B_A3B = {
    "vocab_size": 151_936,           # vocabulary size
    "context_length": 262_144,       # context length
    "emb_dim": 2048,                 # embedding dimension
    "n_heads": 32,                   # query heads
    "n_layers": 48,                  # transformer blocks
    "head_dim": 128,                 # size of each head
    "qk_norm": True,                 # RMSNorm on queries and keys
    "n_kv_groups": 4,                # key/value heads of grouped-query attention
    "rope_base": 10_000_000.0,       # the base "theta" of RoPE
    "num_experts": 128,              # experts per block
    "num_experts_per_tok": 8,        # experts each token is routed to
    "moe_intermediate_size": 768,    # hidden width of each expert
}
MOE_KEYS = ("num_experts", "num_experts_per_tok", "moe_intermediate_size")


class MoEFeedForward(Module):
    """`forward(x)`: (b, T, emb) -> (b, T, emb), each token through its top-k experts."""

    def __init__(self, cfg):
        super().__init__()
        emb, hidden = cfg["emb_dim"], cfg["moe_intermediate_size"]
        self.num_experts, self.num_experts_per_tok = cfg["num_experts"], cfg["num_experts_per_tok"]
        if not 0 < self.num_experts_per_tok <= self.num_experts:
            raise InputError(f"num_experts_per_tok ({self.num_experts_per_tok}) must be in "
                             f"1..num_experts ({self.num_experts})")
        self.norm_topk_prob = cfg.get("norm_topk_prob", True)
        self.gate = Linear(emb, self.num_experts, bias=False)  # the router
        self.fc1 = ModuleList([Linear(emb, hidden, bias=False) for _ in range(self.num_experts)])
        self.fc2 = ModuleList([Linear(emb, hidden, bias=False) for _ in range(self.num_experts)])
        self.fc3 = ModuleList([Linear(hidden, emb, bias=False) for _ in range(self.num_experts)])
        self.router_stats = None

    def route(self, x_flat):
        """(top-k expert ids (N, k) int64, their weights (N, k) Tensor, router probs (N, X))."""
        probs = softmax(self.gate(x_flat), dim=-1)            # (N, X)
        k = self.num_experts_per_tok
        topk_indices = np.argsort(-probs.data, axis=-1, kind="stable")[:, :k]  # (N, k)
        topk_probs = probs[np.arange(probs.shape[0])[:, None], topk_indices]   # (N, k)
        if self.norm_topk_prob:
            topk_probs = topk_probs / topk_probs.sum(dim=-1, keepdim=True)     # rows sum to 1
        return topk_indices, topk_probs, probs

    def forward(self, x):
        b, num_tokens, emb = x.shape
        n, k = b * num_tokens, self.num_experts_per_tok
        x_flat = x.reshape(n, emb)                            # (N, emb)
        topk_indices, topk_probs, probs = self.route(x_flat)  # (N, k), (N, k), (N, X)
        chosen = topk_indices.reshape(-1)                     # (N*k,) expert of each pair
        order = np.argsort(chosen, kind="stable")             # pairs grouped by expert
        counts = np.bincount(chosen, minlength=self.num_experts)  # (X,) pairs per expert
        outputs, start = [], 0
        for e in np.flatnonzero(counts):                      # only the experts in use
            rows = order[start:start + counts[e]] // k        # the tokens routed to expert e
            x_e = x_flat[rows]                                # (n_e, emb), gathered
            outputs.append(self.fc3[e](silu(self.fc1[e](x_e)) * self.fc2[e](x_e)))  # (n_e, emb)
            start += counts[e]
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        per_slot = cat(outputs, dim=0)[inverse].reshape(n, k, emb)  # (N, k, emb), back in place
        y = (per_slot * topk_probs.reshape(n, k, 1)).sum(dim=1)     # (N, emb), weighted sum
        self.router_stats = load_balancing(counts, probs, n)
        return y.reshape(b, num_tokens, emb)                  # (b, T, emb)


def load_balancing(counts, probs, num_tokens: int) -> dict:
    """The router's statistics: tokens_per_expert (X,) counts, the fraction f_e of tokens that
    chose each expert, the mean router probability P_e (a Tensor), and the Switch Transformer's
    auxiliary loss X * sum_e f_e * P_e (1 when balanced; differentiable through P_e), as
    transformers' load_balancing_loss_func computes it for one layer."""
    fraction = counts / float(num_tokens)                     # (X,)
    mean_prob = probs.mean(dim=0)                             # (X,)
    aux_loss = (mean_prob * fraction.astype(mean_prob.dtype)).sum() * float(len(counts))
    return {"tokens_per_expert": counts, "fraction": fraction, "mean_prob": mean_prob,
            "aux_loss": aux_loss}


class Qwen3MoeModel(Qwen3Model):
    """Qwen3Model with a MoEFeedForward in every block: `model(idx)` -> logits, `forward(in_idx,
    kv_cache=None, last_only=False)` as GPTModel's. `aux_loss()` sums the blocks' load-balancing
    losses of the last forward (add router_aux_loss_coef times it to a training loss)."""

    def __init__(self, cfg):
        missing = [k for k in MOE_KEYS if k not in cfg]
        if missing:
            raise InputKeyError(f"Qwen3MoeModel config lacks {', '.join(missing)}")
        # Qwen3Model's blocks, each with a router `gate` and experts fc1/fc2/fc3[e] as its feed-forward
        super().__init__({"hidden_dim": cfg["moe_intermediate_size"], **cfg}, feed_forward=MoEFeedForward)

    def aux_loss(self):
        """The sum over blocks of the last forward's load-balancing loss (a Tensor)."""
        stats = [block.ff.router_stats for block in self.trf_blocks]
        if any(s is None for s in stats):
            raise InputError("aux_loss needs a forward first")
        losses = [s["aux_loss"] for s in stats]
        total = losses[0]
        for loss in losses[1:]:
            total = total + loss
        return total
