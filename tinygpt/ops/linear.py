"""The Linear layer's product as one op: y = x @ W.T + b (book appendix A.5, chapter 3 onwards).

One op instead of transpose + matmul + add keeps the graph short and lets backward produce each
gradient contiguous and in its final layout: dW = g.T @ x (out, in), db = sum of g over rows,
dx = g @ W. Activations are 2-D (rows, features) here, which is where BLAS runs at full speed."""
import numpy as np

from .. import kernels
from ..core import buffers
from ..core.autograd import Function


class Linear(Function):
    def forward(self, x, weight, bias=None):
        # x (N, in), weight (out, in), bias (out,) -> (N, out)
        self.x, self.weight = x, weight
        # the output head's (N, vocab) logits are the one huge activation: reused storage
        out = kernels.matmul(x, weight.T, out=buffers.empty("linear.out", (x.shape[0], weight.shape[0]),
                                                           np.result_type(x, weight)))
        if bias is not None:
            out += bias
        return out

    def backward(self, g):
        # g (N, out)
        gx = kernels.matmul(g, self.weight) if self.needs_input_grad[0] else None
        gw = None
        if self.needs_input_grad[1]:
            gw = kernels.matmul(g.T, self.x, out=buffers.empty("linear.grad_weight", self.weight.shape,
                                                               np.result_type(g, self.x)))
        if len(self.needs_input_grad) > 2 and self.needs_input_grad[2]:
            return gx, gw, g.sum(axis=0)
        return gx, gw
