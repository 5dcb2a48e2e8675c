"""The Linear layer's product as one op: y = x @ W.T + b (book appendix A.5, chapter 3 onwards).

One op instead of reshape + transpose + matmul + add + reshape keeps the graph short (a GPT-2
block has six Linear layers) and lets backward produce each gradient contiguous and in its final
layout: dW = g.T @ x (out, in), db = sum of g over rows, dx = g @ W. Inside, activations are
flattened to 2-D (rows, features), which is where BLAS runs at full speed."""
import numpy as np

from .. import kernels
from ..core import buffers
from ..core.autograd import Function


class LinearFn(Function):
    saves_inputs = "others"  # x for the weight's gradient, the weight for x's
    def forward(self, x, weight, bias=None):
        # x (..., in), weight (out, in), bias (out,) -> (..., out)
        self.lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])                     # (N, in): a view unless x is strided
        self.x, self.weight = x2, weight
        # the output head's (N, vocab) logits are the one huge activation: reused storage
        out = kernels.matmul(x2, weight.T, out=buffers.empty(buffers.LINEAR_OUT, (x2.shape[0], weight.shape[0]),
                                                            np.result_type(x2, weight)))
        if bias is not None:
            out += bias
        return out.reshape(*self.lead, weight.shape[0])

    def backward(self, g):
        g = g.reshape(-1, g.shape[-1])                      # (N, out)
        gx = None
        if self.needs_input_grad[0]:
            gx = kernels.matmul(g, self.weight).reshape(*self.lead, self.weight.shape[1])
        gw = None
        if self.needs_input_grad[1]:
            gw = kernels.matmul(g.T, self.x, out=buffers.empty(buffers.LINEAR_GRAD_WEIGHT, self.weight.shape,
                                                               np.result_type(g, self.x)))
        if len(self.needs_input_grad) > 2 and self.needs_input_grad[2]:
            return gx, gw, g.sum(axis=0)
        return gx, gw
