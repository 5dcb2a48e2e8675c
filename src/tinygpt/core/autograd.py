"""Reverse-mode automatic differentiation: `Function`, grad mode and the backward pass.

Every differentiable op is a `Function` subclass whose `forward` and `backward` work on raw
ndarrays (no higher-order gradients). `Function.apply` records the op in the graph only when
grad mode is on and some input requires a gradient, so frozen parameters and `no_grad` code
cost no graph bookkeeping and no gradient work.
"""
import contextlib
import itertools

import numpy as np

from ..errors import InputError, StateError, TinyGPTError

_grad_enabled = True
Tensor = None  # tinygpt.core.tensor.Tensor; tensor.py sets it (it imports this module first)


def is_grad_enabled() -> bool:
    return _grad_enabled


@contextlib.contextmanager
def no_grad():
    """Inside this block no graph is recorded (evaluation, generation, optimizer updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


class ModifiedInPlaceError(TinyGPTError, RuntimeError):
    """A tensor an op saved for its backward was changed in place (an optimizer step,
    load_state_dict) between the forward and the backward: its gradient would be the gradient at
    the new values. PyTorch raises a RuntimeError here too."""


class Function:
    """One differentiable op. Subclasses implement `forward(*arrays, **options)` returning an
    ndarray and `backward(grad)` returning one gradient (or None) per tensor input.
    `self.needs_input_grad[i]` tells backward which gradients are wanted, so it can skip work.

    `saves_inputs`: whether backward reads the inputs' values: True (Log), False (Add), or
    "others" when an input's values serve only the other inputs' gradients (Mul, MatMul: the
    gradient of a is g * b), so they matter only if another input needs a gradient. `apply`
    records the versions of the inputs that matter and backward refuses to run once one has
    changed in place (`Tensor.bump_version`), as torch does for the tensors an op saved."""
    saves_inputs = True
    versions = None  # the inputs' versions at forward, when saves_inputs and the op is recorded

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.parents = ()

    def forward(self, *arrays, **options):
        raise NotImplementedError(f"{type(self).__name__} must define forward")

    def backward(self, grad):
        raise NotImplementedError(f"{type(self).__name__} must define backward")

    @classmethod
    def apply(cls, *inputs, **options):
        tensors = [x if isinstance(x, Tensor) else Tensor(x) for x in inputs]
        needs = [t.requires_grad for t in tensors]
        fn = cls(needs)
        out = Tensor(fn.forward(*[t.data for t in tensors], **options))
        if _grad_enabled and any(needs):
            out.requires_grad = True
            out._ctx = fn
            fn.parents = tensors
            if cls.saves_inputs:
                fn.versions = _versions(tensors, needs, cls.saves_inputs == "others")
        return out

    def check_versions(self) -> None:
        """Raise if an input this op saved was changed in place since its forward."""
        for i, t in enumerate(self.parents):
            if self.versions[i] is not None and t._version != self.versions[i]:
                raise ModifiedInPlaceError(
                    f"one of the tensors needed for the gradient of {type(self).__name__} (input {i}, "
                    f"shape {t.shape}) has been modified by an in-place operation: it is at version "
                    f"{t._version}, expected {self.versions[i]} (an optimizer step or "
                    "load_state_dict between the forward and backward?)")


def _versions(tensors, needs, for_others: bool) -> list:
    """Each input's version, or None where backward will not read it: with `for_others`, an input
    is read only if some other input needs a gradient."""
    if not for_others:
        return [t._version for t in tensors]
    wanted = sum(needs)
    return [t._version if wanted - need else None for t, need in zip(tensors, needs)]


class RemovableHandle:
    """What `register_hook` and the Module hook methods return: `.remove()` unregisters the hook
    (also usable as a context manager, removing it on exit)."""
    _ids = itertools.count()

    def __init__(self, registry: dict, hook):
        self.registry, self.id = registry, next(self._ids)
        registry[self.id] = hook

    def remove(self) -> None:
        self.registry.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def readonly(grad) -> np.ndarray:
    """A read-only view of a gradient handed to a hook: a hook that wants another gradient
    returns it, and cannot change the one autograd goes on using by writing into it."""
    view = np.asarray(grad).view()
    view.flags.writeable = False
    return view


def _run_tensor_hooks(tensor, grad):
    """The gradient flowing into `tensor` after its hooks, in registration order: each sees the
    previous one's result and may return a replacement of the same shape."""
    for hook in list(tensor._hooks.values()):
        new = hook(readonly(grad))
        if new is not None:
            new = np.asarray(new.data if isinstance(new, Tensor) else new)
            if new.shape != tensor.shape:
                raise InputError(f"gradient hook {getattr(hook, '__name__', hook)!r} returned shape "
                                 f"{new.shape} for a tensor of shape {tensor.shape}")
            grad = new.astype(tensor.dtype, copy=False)
    return grad


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a gradient back to the shape of the input it belongs to (undo NumPy broadcasting):
    first the leading axes broadcasting added, then the size-1 axes it stretched."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return np.asarray(grad)  # a sum down to shape () gives a NumPy scalar


def _toposort(root):
    """Nodes reachable from root, each after all its parents; iterative, so a 10k-op chain works."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            for parent in node._ctx.parents:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order


def _unshared_grad(g, ids_given_to_leaves: set) -> np.ndarray:
    """A gradient array a leaf may keep (optimizers and clipping update .grad in place): copy it
    only when it could be shared (a view, read-only, or already given to another leaf)."""
    shared = id(g) in ids_given_to_leaves
    if isinstance(g, np.ndarray) and g.base is None and g.flags.writeable and not shared:
        ids_given_to_leaves.add(id(g))
        return g
    g = np.array(g)
    ids_given_to_leaves.add(id(g))
    return g


def backward(root, grad: np.ndarray, retain_graph: bool = False) -> None:
    """Propagate `grad` from `root` to every leaf that requires a gradient, accumulating into
    `.grad` as PyTorch does. Unless `retain_graph`, each op's saved arrays are freed once used,
    and a second backward through the same graph raises."""
    grads = {id(root): grad}
    ids_given_to_leaves = set()
    for node in reversed(_toposort(root)):
        g = grads.pop(id(node), None)
        if g is None:
            continue
        # Tensor._hooks is None until register_hook: one check per node (bench/hooks.py times it)
        if node._hooks:
            g = _run_tensor_hooks(node, g)
        ctx = node._ctx
        if ctx is None:  # a leaf
            if node.grad is None:
                node.grad = _unshared_grad(g, ids_given_to_leaves)
            else:  # accumulate like PyTorch; np.asarray because 0-d arithmetic gives scalars
                node.grad = np.asarray(node.grad + g)
            continue
        if getattr(ctx, "freed", False):
            raise StateError(
                f"Trying to backward through the graph a second time (op {type(ctx).__name__}): "
                "its saved arrays were freed; call backward(retain_graph=True) the first time")
        if getattr(ctx, "versions", None) is not None:  # only ops with saves_inputs record them
            ctx.check_versions()
        input_grads = ctx.backward(g)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for parent, pg in zip(ctx.parents, input_grads):
            if pg is None or not parent.requires_grad:
                continue
            pg = unbroadcast(np.asarray(pg), parent.shape)
            if pg.shape != parent.shape:
                raise RuntimeError(f"{type(ctx).__name__}.backward returned a gradient of shape "
                                   f"{pg.shape} for an input of shape {parent.shape}")
            if pg.dtype != parent.dtype:
                pg = pg.astype(parent.dtype)
            key = id(parent)
            grads[key] = pg if key not in grads else grads[key] + pg
        if not retain_graph:
            ctx.__dict__ = {"freed": True, "parents": ctx.parents,
                            "needs_input_grad": ctx.needs_input_grad}
