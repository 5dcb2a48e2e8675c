"""What the hook machinery costs a model that installs no hook.

    python bench/hooks.py [--nodes 20000] [--repeats 5]

Tensor hooks: backward checks `node._hooks` once per graph node (a class-level None until
`register_hook`). Timed: a backward pass over a chain of `--nodes` tiny ops (per node), and the
same number of `_hooks` checks alone; the ratio is the share of backward the check can cost.
Module hooks: `Module.__call__` checks two registries before calling `forward`. Timed: a tiny
Linear called through `__call__` and through `forward` directly; the difference per call is
the whole cost, next to the op itself. Medians of --repeats runs, one thread.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import SRC, median  # noqa: E402

sys.path.insert(0, SRC)


def per_node_backward(tg, nodes):
    x = tg.ones(4, requires_grad=True)
    y = x
    for _ in range(nodes):
        y = y * 1.0001
    start = time.perf_counter()
    y.sum().backward()
    return (time.perf_counter() - start) / nodes


def per_hook_check(tg, nodes):
    tensors = [tg.ones(4) for _ in range(1000)] * (nodes // 1000)
    start = time.perf_counter()
    for t in tensors:
        if t._hooks:
            pass
    checked = time.perf_counter() - start
    start = time.perf_counter()
    for t in tensors:
        pass
    return max(checked - (time.perf_counter() - start), 0.0) / len(tensors)


def per_module_call(tg, calls):
    lin, x = tg.nn.Linear(4, 4), tg.ones(2, 4)
    times = []
    for fn in (lin, lin.forward):
        for _ in range(calls // 10):  # warm-up, so neither side pays first-call costs
            fn(x)
        start = time.perf_counter()
        for _ in range(calls):
            fn(x)
        times.append((time.perf_counter() - start) / calls)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    import tinygpt as tg
    node = median([per_node_backward(tg, args.nodes) for _ in range(args.repeats)])
    check = median([per_hook_check(tg, args.nodes) for _ in range(args.repeats)])
    pairs = [per_module_call(tg, args.nodes // 4) for _ in range(args.repeats)]
    via_call, via_forward = median([p[0] for p in pairs]), median([p[1] for p in pairs])
    print(f"backward per node           {node * 1e6:8.2f} us")
    print(f"hook check per node         {check * 1e9:8.1f} ns  ({check / node:.2%} of a node's backward)")
    print(f"Linear via Module.__call__  {via_call * 1e6:8.2f} us")
    print(f"Linear via .forward         {via_forward * 1e6:8.2f} us  "
          f"(__call__'s hook checks: {(via_call - via_forward) * 1e9:.0f} ns a call)")


if __name__ == "__main__":
    main()
