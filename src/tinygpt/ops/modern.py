"""The ops of today's open-weight LLMs (Qwen3, Llama 3): RMSNorm, rotary position embeddings
(RoPE), SiLU, and grouped-query attention, as in the book repository's `ch05/11_qwen3` and
`ch05/07_gpt_to_llama`.

* `rms_norm(x, scale, eps)`: x / sqrt(mean(x^2) + eps) * scale over the last dim. No mean is
  subtracted and there is no shift (LayerNorm without centring). The engine stores float32 or
  float64, so the statistics are always computed in at least float32, which is what the
  references do for bf16 storage.
* `rope(x, cos, sin, offset)`: rotate each (x_i, x_{i+hd/2}) pair of a head by the angle
  position * inv_freq_i, the split-halves ("rotate half") form Hugging Face and the book use.
  `rope_tables` builds cos/sin, with Llama 3's frequency scaling when given `freq_config`.
* `silu(x)` = x * sigmoid(x); SwiGLU is `silu(fc1(x)) * fc2(x)`, a composition.
* `grouped_query_attention(queries, keys, values, dropout_p)`: H query heads share G = H / group_size
  key/value heads; the scores are scaled by 1 / sqrt(head_dim) and the attention weights dropped
  with probability `dropout_p` (0 at inference). The queries are viewed as (b, G, group_size, T,
  hd) and the keys as (b, G, 1, L, hd), so one broadcast product serves a whole group: no path
  (training or the KV cache's decode) materialises the repeated keys and values.
"""
import numpy as np

from .. import kernels
from ..core.autograd import Function
from ..core.dtypes import require_float
from ..core.tensor import as_tensor
from .activations import scaled_causal_softmax
from ..errors import InputError, InputTypeError


class RMSNormFn(Function):
    """y = x * rstd * scale, rstd = 1 / sqrt(mean(x^2) + eps) per row of the last dim, in
    `kernels.rmsnorm_forward` (Numba, or the NumPy reference beside it), which saves rstd.
    Backward: with g = dy * scale and x_hat = x * rstd,
    dx = rstd * (g - x_hat * mean(g * x_hat)), dscale = sum over rows of dy * x_hat."""

    def forward(self, x, scale, eps):
        self.shape = x.shape
        self.x2d = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))  # (N, d)
        self.scale = scale
        y, self.rstd = kernels.rmsnorm_forward(self.x2d, scale, eps)  # (N, d), (N,)
        return y.reshape(self.shape)

    def backward(self, g):
        g2d = np.ascontiguousarray(g.reshape(-1, g.shape[-1]))       # (N, d)
        dx, dscale = kernels.rmsnorm_backward(g2d, self.x2d, self.scale, self.rstd)
        return dx.reshape(self.shape), dscale


def _rotate_half(x):
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def _rotate_half_transposed(g):
    """The transpose of `_rotate_half`: (g1, g2) -> (g2, -g1)."""
    half = g.shape[-1] // 2
    return np.concatenate([g[..., half:], -g[..., :half]], axis=-1)


def rotate(x, cos, sin):
    """RoPE on arrays: x * cos + rotate_half(x) * sin, cos and sin broadcasting against x."""
    return x * cos + _rotate_half(x) * sin


class Rope(Function):
    """x * cos + rotate_half(x) * sin, a fixed rotation per position, so its gradient is the
    inverse rotation: g * cos + rotate_half^T(g * sin). cos/sin are constants (T, hd)."""
    saves_inputs = False

    def forward(self, x, cos, sin):
        self.cos, self.sin = cos, sin
        return rotate(x, cos, sin)                                # (..., T, hd)

    def backward(self, g):
        return g * self.cos + _rotate_half_transposed(g * self.sin), None, None


class Silu(Function):
    """x * sigmoid(x); derivative s * (1 + x * (1 - s)) with s = sigmoid(x), recomputed from x
    in `kernels.silu_backward` (Numba, or the NumPy reference beside it), so only x is kept."""

    def forward(self, x):
        self.x = x
        return kernels.silu_forward(x)

    def backward(self, g):
        return kernels.silu_backward(self.x, g)


def rms_norm(x, scale, eps: float = 1e-6):
    """RMSNorm over the last dim (Qwen3 eps 1e-6, Llama 3 1e-5); `scale` has shape (d,)."""
    x, scale = as_tensor(x), as_tensor(scale)
    require_float(x.dtype, "rms_norm")
    d = x.shape[-1] if x.ndim else None
    if scale.shape != (d,):
        raise InputError(f"rms_norm: scale of shape {scale.shape} must be ({d},) for input of "
                         f"shape {x.shape}")
    if x.dtype != scale.dtype:
        raise InputTypeError(f"rms_norm: dtypes differ: x {x.dtype}, scale {scale.dtype}")
    return RMSNormFn.apply(x, scale, eps=float(eps))


def rope_tables(head_dim: int, theta_base: float = 10_000.0, context_length: int = 4096,
                freq_config: dict | None = None, dtype=np.float32):
    """(cos, sin), each (context_length, head_dim): the book's `compute_rope_params`.
    inv_freq_i = theta_base ** (-2i / head_dim); with `freq_config` (Llama 3: factor,
    low_freq_factor, high_freq_factor, original_context_length) wavelengths longer than
    original / low_freq_factor are slowed by `factor`, those shorter than original /
    high_freq_factor are kept, and the band between is interpolated smoothly. Computed in
    float64, then cast to `dtype`."""
    if head_dim % 2:
        raise InputError(f"rope needs an even head_dim, got {head_dim}")
    inv_freq = 1.0 / theta_base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if freq_config is not None:
        inv_freq = _llama3_scaled(inv_freq, **freq_config)
    positions = np.arange(context_length, dtype=np.float64)
    angles = positions[:, None] * inv_freq[None, :]              # (ctx, hd/2)
    angles = np.concatenate([angles, angles], axis=1)            # (ctx, hd): both halves
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def _llama3_scaled(inv_freq, factor, low_freq_factor, high_freq_factor, original_context_length):
    low_freq_wavelen = original_context_length / low_freq_factor
    high_freq_wavelen = original_context_length / high_freq_factor
    wavelen = 2 * np.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original_context_length / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * (inv_freq / factor) + smooth * inv_freq
    medium = (wavelen <= low_freq_wavelen) & (wavelen >= high_freq_wavelen)
    return np.where(medium, smoothed, scaled)


def rope(x, cos, sin, offset: int = 0):
    """Rotate x (..., T, head_dim) for positions offset .. offset+T-1 (`offset`: the tokens a
    KV cache already holds); cos/sin are `rope_tables` arrays (context_length, head_dim)."""
    x = as_tensor(x)
    require_float(x.dtype, "rope")
    cos, sin = np.asarray(cos), np.asarray(sin)
    t, hd = x.shape[-2:] if x.ndim >= 2 else (None, None)
    if hd is None or hd % 2 or cos.shape[1:] != (hd,) or sin.shape != cos.shape:
        raise InputError(f"rope: input {x.shape} must be (..., T, even head_dim) matching cos "
                         f"{cos.shape} and sin {sin.shape} (context_length, head_dim)")
    if offset < 0 or offset + t > cos.shape[0]:
        raise InputError(f"rope: positions {offset}..{offset + t - 1} are outside the tables' "
                         f"{cos.shape[0]} positions (context_length)")
    window = slice(offset, offset + t)
    return Rope.apply(x, cos[window].astype(x.dtype, copy=False),
                      sin[window].astype(x.dtype, copy=False))


def silu(x):
    """SiLU (swish): x * sigmoid(x), the gate of the SwiGLU feed-forward."""
    x = as_tensor(x)
    require_float(x.dtype, "silu")
    return Silu.apply(x)


def grouped_query_attention(queries, keys, values, dropout_p: float = 0.0):
    """Causal attention of queries (b, H, T, hd) over keys/values (b, G, L, hd), G dividing H;
    query head h uses key/value head h // (H / G), as repeat_interleave would pair them. Query i
    sits at position L - T + i (what a KV cache needs). Returns (b, H, T, hd)."""
    queries, keys, values = as_tensor(queries), as_tensor(keys), as_tensor(values)
    if queries.ndim != 4 or keys.ndim != 4:
        raise InputError(f"grouped_query_attention needs 4-D queries (b, H, T, head_dim) and keys "
                         f"(b, G, L, head_dim), got {queries.shape} and {keys.shape}")
    b, n_heads, t, hd = queries.shape
    n_kv = keys.shape[1]
    if n_kv == 0 or n_heads % n_kv or keys.shape != values.shape or keys.shape[::3] != (b, hd):
        raise InputError(f"grouped_query_attention: queries {queries.shape} need keys and values "
                         f"(b, G, L, head_dim) with G dividing the heads, got {keys.shape} and "
                         f"{values.shape}")
    group_size = n_heads // n_kv
    q = queries.reshape(b, n_kv, group_size, t, hd)          # (b, G, gs, T, hd)
    k = keys.reshape(b, n_kv, 1, keys.shape[2], hd)          # (b, G, 1, L, hd): shared by the group
    v = values.reshape(b, n_kv, 1, keys.shape[2], hd)        # (b, G, 1, L, hd)
    scores = q @ k.transpose(-2, -1)                         # (b, G, gs, T, L)
    weights = scaled_causal_softmax(scores, 1.0 / hd ** 0.5, dropout_p)  # (b, G, gs, T, L)
    context = weights @ v                                    # (b, G, gs, T, hd)
    return context.reshape(b, n_heads, t, hd)                # (b, H, T, hd)
