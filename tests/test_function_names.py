"""An autograd `Function` and an nn `Module` never share a name (ignoring case), so a traceback, a
graph node (tinygpt.viz) or an import names one thing: the ops' rule (tinygpt/ops/__init__.py) is
that a Function whose name would clash with a Module's takes the suffix Fn (`LinearFn` is the
op, `nn.Linear` the layer)."""
import importlib
import pkgutil

import tinygpt
from tinygpt import Function, nn


def all_subclasses(cls) -> set:
    found, stack = set(), [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                stack.append(sub)
    return found


def import_every_tinygpt_module():
    for info in pkgutil.walk_packages(tinygpt.__path__, "tinygpt."):
        if not info.name.endswith("__main__"):  # running it would parse the command line
            importlib.import_module(info.name)


def shared_names(functions, modules) -> list:
    """Names (compared ignoring case) that are both a Function's and a Module's, each as
    'Function module.Name / Module module.Name'."""
    by_key = {}
    for cls in modules:
        by_key.setdefault(cls.__name__.lower(), []).append(cls)
    return sorted(f"Function {f.__module__}.{f.__name__} / Module {m.__module__}.{m.__name__}"
                  for f in functions for m in by_key.get(f.__name__.lower(), []))


def test_no_function_shares_a_name_with_a_module():
    import_every_tinygpt_module()
    ours = lambda classes: {c for c in classes if c.__module__.startswith("tinygpt.")}  # noqa: E731
    functions, modules = ours(all_subclasses(Function)), ours(all_subclasses(nn.Module))
    assert len(functions) > 30 and len(modules) > 20, "the walk finds the ops and the layers"
    clashes = shared_names(functions, modules)
    assert not clashes, f"rename the Function (suffix Fn, tinygpt/ops/__init__.py): {clashes}"


def test_the_renamed_ops_are_the_ones_the_layers_call():
    from tinygpt.ops import activations, elementwise, indexing, linear, modern, normalization
    for module, name in [(linear, "LinearFn"), (normalization, "LayerNormFn"),
                         (normalization, "DropoutFn"), (indexing, "EmbeddingFn"),
                         (modern, "RMSNormFn"), (activations, "GeluFn"), (elementwise, "ReluFn")]:
        assert issubclass(getattr(module, name), Function), f"{module.__name__}.{name}"
    x = tinygpt.randn(2, 4, requires_grad=True)
    layer = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.GELU(), nn.ReLU())
    out = layer(x)
    seen, node = [], out
    while node._ctx is not None:
        seen.append(type(node._ctx).__name__)
        node = node._ctx.parents[0]
    assert seen == ["ReluFn", "GeluFn", "LayerNormFn", "LinearFn"]


def test_the_check_sees_a_clash():
    class Linear(Function):  # a Function named like nn.Linear (only this test's local class)
        pass

    class Gelu(Function):  # differs from nn.GELU only in case
        pass

    clashes = shared_names({Linear, Gelu}, all_subclasses(nn.Module))
    assert any("Function" in c and ".Linear / Module tinygpt.nn.layers.Linear" in c for c in clashes)
    assert any(".Gelu / Module tinygpt.nn.layers.GELU" in c for c in clashes)
