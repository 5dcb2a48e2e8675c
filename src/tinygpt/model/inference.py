"""`for_inference(model)`: the one step that readies a model for fast generation, prompts and
training (`for_training` is the same step under the name a training script reads better with).

The models a user builds (GPTModel, Qwen3Model, Llama3Model) are made of the book's classes:
MultiHeadAttention (attention.py), GroupedQueryAttention and FeedForward (modern.py), each weight
in its own array. `for_inference` puts in place of each such layer its fast twin
(FastMultiHeadAttention, fast_attention.py; FastGroupedQueryAttention and FastFeedForward,
fast_modern.py): a subclass that takes over the layer's very Linears and Parameters and packs
the projections that read the same input (W_query/W_key/W_value, fc1/fc2) into one array
(packing.py), and that decodes over the KV cache with one kernel call per layer.

    model = for_inference(Qwen3Model(cfg))     # or a loaded model: the CLI does this

What stays: the parameters (the same objects), the state-dict names and their order, the outputs
(up to rounding: one product instead of three, and attention in the blocked kernel), train/eval
mode, hooks, and the dropout masks drawn after a `manual_seed`. Training: where a graph is
recorded each Linear runs itself (its gradient reaches its own Parameter) and attention runs
`F.causal_attention`, the blocked kernel forward and backward, which keeps no (T, T) weights for
backward; the optimizer updates the packed views in place like any other Parameter array, and
evaluation under no_grad takes the packed products. What changes: the layers' types, and the
weights of each packed group become views of one array.

Memory: the layers are packed one at a time, each freeing its separate arrays as its packed array
takes their place, so the peak is the weights plus one layer's packed group.

A layer that is fast already is packed again (after `model.to(dtype)` gave its weights new
arrays, the layers run themselves, correct but slower, until for_inference is called again). A
subclass of the book's classes is left as it is: its forward may differ.
"""
from ..nn import Module
from .attention import MultiHeadAttention
from .fast_attention import FastMultiHeadAttention
from .fast_modern import FastFeedForward, FastGroupedQueryAttention
from .modern import FeedForward, GroupedQueryAttention

FAST_TWINS = {MultiHeadAttention: FastMultiHeadAttention,
              GroupedQueryAttention: FastGroupedQueryAttention,
              FeedForward: FastFeedForward}


def for_inference(model: Module) -> Module:
    """Swap every MultiHeadAttention, GroupedQueryAttention and (SwiGLU) FeedForward of `model`
    for its fast twin, in place, packing each as it goes (see the module docstring). Returns the
    model; if `model` is itself such a layer, returns its twin instead."""
    twin = FAST_TWINS.get(type(model))
    if twin is not None:
        return twin.from_book(model)
    if type(model) in FAST_TWINS.values():
        model.pack()
        return model
    stack = [model]
    while stack:  # iterative walk over the module tree
        parent = stack.pop()
        for name, child in list(parent._modules.items()):
            twin = FAST_TWINS.get(type(child))
            if twin is not None:
                fast = twin.from_book(child)
                parent._modules[name] = fast            # same place: state-dict order unchanged
                object.__setattr__(parent, name, fast)
            elif type(child) in FAST_TWINS.values():
                child.pack()
            else:
                stack.append(child)
    return model


def for_training(model: Module) -> Module:
    """`for_inference(model)`: the fast twins train too (see the module docstring), so a training
    script readies its model with the same swap, e.g. `model = for_training(GPTModel(cfg))`."""
    return for_inference(model)
