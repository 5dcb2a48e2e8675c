"""The autograd graph behind a tensor, as Graphviz DOT source or a drawing.

Every op a forward pass records is a node (op name, output shape, dtype) and so is every leaf
(parameters by name, inputs and constants); edges point the way the data flows, from an op's inputs
to the op. For a big model, record the forward inside `record_modules(model)` and pass
`depth=`: each module call at that depth becomes one node, so GPT-2's graph shows 12
`trf_blocks.i` boxes instead of thousands of ops.
"""
import contextlib
import shutil
import subprocess
import warnings
from pathlib import Path

from ..core.tensor import Tensor
from ..errors import InputError
from ..files import atomic_write


def graph_tensors(tensor):
    """Every tensor in the graph behind `tensor` (op outputs and leaves), each after its inputs."""
    order, seen, stack = [], set(), [(tensor, False)]
    while stack:
        t, inputs_done = stack.pop()
        if inputs_done:
            order.append(t)
        elif id(t) not in seen:
            seen.add(id(t))
            stack.append((t, True))
            if t._ctx is not None:
                stack.extend((p, False) for p in reversed(t._ctx.parents) if id(p) not in seen)
    return order


@contextlib.contextmanager
def record_modules(model):
    """Inside this block every call of `model`'s sub-modules is recorded, for `to_dot(depth=)`:
    the list it yields gets (dotted name, module, input tensors, output tensor) per call."""
    calls = []

    def hook(name):
        def record(module, inputs, output):
            if isinstance(output, Tensor):
                calls.append((name, module, [x for x in inputs if isinstance(x, Tensor)], output))
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules() if name]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _collapsed(calls, depth):
    """{id of a tensor inside a collapsed module call: the call's output}, and the calls' labels.
    Outermost calls first: a call at `depth` or deeper (a block of a list the model loops over
    without calling it) is collapsed, and so is a shallower one without recorded sub-modules."""
    names = {name for name, *_ in calls}
    has_children = {name.rsplit(".", 1)[0] for name in names if "." in name}
    owner, labels = {}, {}
    for name, module, inputs, output in sorted(calls, key=lambda call: call[0].count(".")):
        expand = name.count(".") + 1 < depth and name in has_children
        if expand or id(output) in owner or any(output is x for x in inputs):
            continue  # shown op by op, inside a collapsed call already, or an identity (dropout off)
        labels[id(output)] = f"{name}\\n{type(module).__name__}\\n{tuple(output.shape)} {output.dtype}"
        stop, stack = {id(x) for x in inputs}, [output]
        while stack:
            t = stack.pop()
            if id(t) in stop or id(t) in owner:
                continue
            owner[id(t)] = output
            if t._ctx is not None:
                stack.extend(t._ctx.parents)
    return owner, labels


def _label(t, param_names):
    shape = f"{tuple(t.shape)} {t.dtype}"
    if t._ctx is not None:
        return f"{type(t._ctx).__name__}\\n{shape}", "box", "lightblue"
    if id(t) in param_names:
        return f"{param_names[id(t)]}\\n{shape}", "ellipse", "palegreen"
    return (f"input\\n{shape}" if t.requires_grad or t.size > 1 else f"constant\\n{shape}"), "ellipse", "white"


def to_dot(tensor, params=None, depth=None, modules=None) -> str:
    """Graphviz DOT source of the autograd graph that produced `tensor`.

    `params` ({name: tensor}, e.g. `dict(model.named_parameters())`) names the parameter leaves.
    `depth` with `modules` (from `record_modules`) draws each module call at that depth of the
    dotted names (`depth=2`: `trf_blocks.3`) as one node, and each shallower module without
    sub-modules (`out_head`); shallower modules with sub-modules are drawn op by op.
    """
    if depth is not None and modules is None:
        raise InputError("to_dot(depth=) needs the module calls: run the forward inside "
                         "`with tinygpt.viz.record_modules(model) as calls:` and pass modules=calls")
    param_names = {id(p): name for name, p in (params or {}).items()}
    owner, module_labels = _collapsed(modules, depth) if depth is not None else ({}, {})
    lines = ["digraph autograd {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];']
    tensors, number, edges = graph_tensors(tensor), {}, []

    def node_of(t):
        return owner.get(id(t), t)

    for t in tensors:
        if node_of(t) is not t:  # inside a collapsed module call, whose output stands for it
            continue
        number[id(t)] = n = len(number)
        if id(t) in module_labels:
            lines.append(f'  n{n} [label="{module_labels[id(t)]}", shape=box3d, style=filled, fillcolor=khaki];')
        else:
            label, shape, color = _label(t, param_names)
            lines.append(f'  n{n} [label="{label}", shape={shape}, style=filled, fillcolor={color}];')
    for t in tensors:
        for p in (t._ctx.parents if t._ctx is not None else ()):
            edge = (number[id(node_of(p))], number[id(node_of(t))])
            if edge[0] != edge[1] and edge not in edges:
                edges.append(edge)
    lines += [f"  n{a} -> n{b};" for a, b in edges]
    return "\n".join(lines + ["}"]) + "\n"


def draw_graph(tensor, path, **to_dot_options) -> Path:
    """Draw the graph behind `tensor` to `path` (.svg, .png or .pdf) with Graphviz's `dot` program.
    Without it, write the DOT source beside it (`path` with suffix .dot), warn how to render it,
    and return that path instead."""
    path = Path(path)
    source = to_dot(tensor, **to_dot_options)
    dot = shutil.which("dot")
    if path.suffix == ".dot" or dot is None:
        dot_path = path.with_suffix(".dot")
        with atomic_write(dot_path, "w", encoding="utf-8") as f:
            f.write(source)
        if path.suffix != ".dot":
            warnings.warn(f"Graphviz's dot program is not installed, so {dot_path} holds the graph's DOT "
                          f"source: install Graphviz (apt install graphviz, brew install graphviz) and run "
                          f"`dot -T{path.suffix.lstrip('.') or 'svg'} {dot_path} -o {path}`", RuntimeWarning,
                          stacklevel=2)
        return dot_path
    image = subprocess.run([dot, f"-T{path.suffix.lstrip('.')}"], input=source.encode(),
                           capture_output=True, check=True).stdout
    with atomic_write(path, "wb") as f:
        f.write(image)
    return path
