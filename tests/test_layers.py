"""Layer order for every package of src/tinygpt: a module imports only from layers below its own
(imports inside functions count too). examples/ and bench/ are outside the package; tests and
bench may import anything, plus torch.

    rank  layer                                  may import from tinygpt
    0     errors, files, argtypes, assets        each other only; the standard library, nothing else
    1     kernels                                nothing from tinygpt (NumPy and Numba only)
    2     core, ops                              base, kernels; ops -> core
    3     nn, optim, data, tokenizer, testing    base, kernels, core, ops; data -> tokenizer
    4     model, viz, the package root           the ranks below; root -> model (it re-exports)
    5     weights, train, finetune, quant,       the ranks below; train -> weights,
          serve, distributed, reasoning          finetune -> train, weights; weights -> quant;
                                                 reasoning -> train
    6     cli, __main__                          everything; __main__ -> cli

`serve` (the web page and the OpenAI-compatible API) sits with weights, train and finetune: it is
given a loaded model and serves it; `tinygpt serve` (cli/serve.py) loads it.
`viz/attention.py` runs generation to show what a model attends to, so viz may
import model (model never imports viz).

`testing` (gradient checks, comparisons, hypothesis strategies) sits with nn: it checks the engine
and imports only core and ops. `viz` (graph drawing, activation statistics) sits with model: it
reads modules and tensors and knows nothing of training. The package root (`tinygpt/__init__.py`)
re-exports core, ops, nn, optim and model names, so it sits with model; cli's `from .. import
__version__` is an import of the root.
"""
import ast
import pathlib
import sys

import tinygpt

# the package under test: the source tree, or in CI's wheel pass the installed copy (same files)
SRC = pathlib.Path(tinygpt.__file__).parent

RANK = {"errors": 0, "files": 0, "argtypes": 0, "assets": 0, "kernel_choice": 0,
        "kernels": 1,
        "core": 2, "ops": 2,
        "nn": 3, "optim": 3, "data": 3, "tokenizer": 3, "testing": 3,
        "model": 4, "viz": 4, "<root>": 4,
        "weights": 5, "train": 5, "finetune": 5, "quant": 5, "serve": 5, "distributed": 5, "reasoning": 5,
        "cli": 6, "__main__": 6}
# imports between two layers of one rank, each one way only (the other way would be a cycle)
SIDEWAYS = {("ops", "core"), ("viz", "model"), ("data", "tokenizer"), ("<root>", "model"),
            ("train", "weights"), ("finetune", "train"), ("finetune", "weights"), ("weights", "quant"),
            ("reasoning", "train"),
            ("__main__", "cli"), ("files", "errors"), ("assets", "errors")}
# one file-level exception: Tensor's operators and methods are one-line calls into their ops
# (go-to-definition lands in core/tensor.py), bound by imports at the very end of that file, after
# every definition (tests/test_import_side_effects.py checks the placement)
FILE_SIDEWAYS = {("core/tensor.py", "ops")}
BASE = {name for name, rank in RANK.items() if rank == 0}
THIRD_PARTY = {"kernels": {"numpy", "numba"}}  # kernels: NumPy and Numba, nothing else


def layer_of(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC)
    if rel.parts == ("__init__.py",):
        return "<root>"
    return rel.parts[0].removesuffix(".py")


def imports(path: pathlib.Path):
    """[(line, absolute module name)] of every import in the file, nested ones included;
    `from .. import x` names tinygpt.x when x is a module or package, else the package itself."""
    rel = path.relative_to(SRC).with_suffix("").parts
    package = ["tinygpt", *(rel if path.name == "__init__.py" else rel[:-1])]
    package = package[:-1] if package[-1] == "__init__" else package
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if not node.level:
                found.append((node.lineno, node.module))
                continue
            base = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            if node.module:
                found.append((node.lineno, ".".join(base)))
                continue
            for alias in node.names:
                sub = SRC.joinpath(*base[1:], alias.name)
                is_module = sub.is_dir() or sub.with_suffix(".py").is_file()
                found.append((node.lineno, ".".join(base + [alias.name] if is_module else base)))
    return found


def target_layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def violations():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        layer, where = layer_of(path), f"src/tinygpt/{path.relative_to(SRC).as_posix()}"
        assert layer in RANK, f"{where}: layer {layer!r} has no rank in this test's table"
        for line, module in imports(path):
            top = module.split(".")[0]
            if top == "tinygpt":
                target = target_layer(module)
                if target == layer or (path.relative_to(SRC).as_posix(), target) in FILE_SIDEWAYS:
                    continue
                if target not in RANK:
                    found.append(f"{where}:{line}: imports {module}, which has no layer")
                elif layer == "kernels" or not (RANK[target] < RANK[layer] or (layer, target) in SIDEWAYS):
                    found.append(f"{where}:{line}: {layer} (rank {RANK[layer]}) imports {module} "
                                 f"({target}, rank {RANK[target]})")
            elif layer in BASE and top not in sys.stdlib_module_names:
                found.append(f"{where}:{line}: {layer} is standard-library only, imports {module}")
            elif layer in THIRD_PARTY and top not in sys.stdlib_module_names | THIRD_PARTY[layer]:
                found.append(f"{where}:{line}: {layer} imports {module}")
    return found


def test_every_package_imports_only_downwards():
    found = violations()
    assert not found, "imports against the layer order (see this file's docstring):\n" + "\n".join(found)


def test_every_layer_has_a_rank():
    on_disk = {layer_of(p) for p in SRC.rglob("*.py") if "__pycache__" not in p.parts}
    assert on_disk <= set(RANK), f"give these a rank in the table: {sorted(on_disk - set(RANK))}"


def test_the_walker_sees_nested_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "tinygpt"
    for folder in ("core", "model", "kernels"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "core" / "x.py").write_text("from ..errors import E\n"
                                       "def f():\n    from ..model import GPTModel\n")
    (pkg / "kernels" / "k.py").write_text("import numpy\nimport torch\nfrom .. import errors\n")
    monkeypatch.setitem(globals(), "SRC", pkg)
    assert violations() == [
        "src/tinygpt/core/x.py:3: core (rank 2) imports tinygpt.model (model, rank 4)",
        "src/tinygpt/kernels/k.py:2: kernels imports torch",
        "src/tinygpt/kernels/k.py:3: kernels (rank 1) imports tinygpt.errors (errors, rank 0)"]
