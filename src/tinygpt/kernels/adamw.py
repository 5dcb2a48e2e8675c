"""AdamW: one in-place update of a parameter and its two moment buffers (torch.optim.AdamW semantics).

Same operation order as torch's single-tensor AdamW so float32 results agree to the last bit or so:
    p *= 1 - lr wd;  m += (1 - b1) (g - m);  v = v b2 + (1 - b2) g g;
    p += (-lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)
Numba path: one fused pass over the four arrays (no temporaries), big contiguous chunks on
threads (``run_chunks``); sqrt and division vectorise (no libm call), no fast-math. Bit-identical
to the NumPy reference (tested); within 1 ulp of torch. bench/kernels.py times it ("adamw" row)
against the reference and torch.optim.AdamW.
"""
import math

import numpy as np

from ._jit import chunk_bounds, chunks, njit, run_chunks


def adamw_step_ref(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    # all arrays same shape and dtype; `step` already incremented (>= 1)
    param *= 1.0 - lr * weight_decay                 # decoupled weight decay
    exp_avg += (1.0 - beta1) * (grad - exp_avg)      # torch: exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq *= beta2                              # torch: .mul_(beta2).addcmul_(g, g, 1 - beta2)
    exp_avg_sq += (1.0 - beta2) * grad * grad
    step_size = lr / (1.0 - beta1 ** step)
    bc2_sqrt = math.sqrt(1.0 - beta2 ** step)
    denom = np.sqrt(exp_avg_sq) / bc2_sqrt + eps
    param += -step_size * exp_avg / denom            # torch: param.addcdiv_(m, denom, -step_size)


@njit
def _adamw(param, grad, exp_avg, exp_avg_sq, decay, one_minus_beta1, beta2, one_minus_beta2, neg_step,
           bc2_sqrt, eps, c, nchunks):
    lo, hi = chunk_bounds(c, nchunks, param.shape[0])
    # views, and loops from 0: Numba cannot prove range(lo, hi) indices non-negative, and the
    # negative-index wraparound check it then emits stops LLVM from vectorising the loop
    p = param[lo:hi]; g = grad[lo:hi]; m = exp_avg[lo:hi]; v = exp_avg_sq[lo:hi]
    for j in range(hi - lo):
        gj = g[j]
        mj = m[j]
        mj = mj + one_minus_beta1 * (gj - mj)
        vj = v[j] * beta2 + one_minus_beta2 * gj * gj
        m[j] = mj
        v[j] = vj
        p[j] = p[j] * decay + neg_step * mj / (np.sqrt(vj) / bc2_sqrt + eps)


MIN_ELEMS = 1 << 18  # values per chunk: enough work to pay for a thread hand-off (bench/kernels.py)


def adamw_step_numba(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    for name, a in (("param", param), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if not a.flags.c_contiguous or a.dtype != param.dtype or a.shape != param.shape:
            raise ValueError(f"adamw_step: {name} must be C-contiguous with param's shape and dtype")
    if step < 1:
        raise ValueError(f"adamw_step: step must be >= 1 (already incremented), got {step}")
    T = param.dtype.type
    n = param.size
    if n == 0:
        return
    run_chunks(_adamw, chunks(n, MIN_ELEMS), param.reshape(-1),
               np.ascontiguousarray(grad, param.dtype).reshape(-1), exp_avg.reshape(-1),
               exp_avg_sq.reshape(-1), T(1.0 - lr * weight_decay), T(1.0 - beta1), T(beta2),
               T(1.0 - beta2), T(-lr / (1.0 - beta1 ** step)), T(math.sqrt(1.0 - beta2 ** step)), T(eps))
