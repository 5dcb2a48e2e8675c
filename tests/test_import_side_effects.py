"""`import tinygpt` changes nothing outside tinygpt: glibc's malloc keeps its default rule until the
program calls `tinygpt.tune_malloc()` (tinygpt/core/malloc.py)."""
import os
import subprocess
import sys

import pytest

from tinygpt.core.malloc import is_glibc

# How many bytes of a fresh 4 MB NumPy array glibc placed with mmap (mallinfo2's hblkhd grows by
# them): glibc's default mmap threshold is 128 KB, so by default the whole array is mmapped;
# under tune_malloc (threshold 32 MB) it comes from the heap and hblkhd does not grow.
_MMAPPED_SCRIPT = """
import ctypes, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
import numpy as np
{setup}
before = mallinfo2().hblkhd
array = np.ones(4 << 20, np.uint8)
print(applied, mallinfo2().hblkhd - before)
"""


def _mmapped_bytes(setup):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "TINYGPT_MALLOC"}
    out = subprocess.run([sys.executable, "-c", _MMAPPED_SCRIPT.format(setup=setup)], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
    return out[0], int(out[1])


def _has_mallinfo2():
    import ctypes
    return is_glibc() and hasattr(ctypes.CDLL(None), "mallinfo2")  # glibc >= 2.33


@pytest.mark.skipif(not _has_mallinfo2(), reason="reads glibc's mallinfo2 (glibc >= 2.33)")
def test_import_keeps_glibc_default_and_tune_malloc_changes_it():
    applied, mmapped = _mmapped_bytes("applied = None")
    assert mmapped >= 4 << 20, "without tinygpt a 4 MB array is mmapped (glibc's default rule)"
    applied, mmapped = _mmapped_bytes("import tinygpt; applied = None")
    assert mmapped >= 4 << 20, "import tinygpt changed how glibc places a 4 MB array"
    applied, mmapped = _mmapped_bytes("import tinygpt; applied = tinygpt.tune_malloc()")
    assert applied == "True" and mmapped == 0, "tune_malloc() should put a 4 MB array on the heap"


def test_tune_malloc_can_be_turned_off_and_yields_to_glibc_variables(monkeypatch):
    import tinygpt
    monkeypatch.setenv("TINYGPT_MALLOC", "default")
    assert tinygpt.tune_malloc() is False
    monkeypatch.delenv("TINYGPT_MALLOC")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    assert tinygpt.tune_malloc() is False


def _tinygpt_imports(path, package):
    """The tinygpt modules a file imports (relative imports resolved against tinygpt.<package>)."""
    import ast
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(["tinygpt", package][: 3 - node.level]) if node.level else ""
            if node.module is None:
                found += [f"{base}.{a.name}" for a in node.names]
            else:
                found.append(f"{base}.{node.module}" if base else node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return [name for name in found if name.split(".")[0] == "tinygpt"]


@pytest.mark.parametrize("package, allowed", [
    ("kernels", {"tinygpt.kernels"}),                       # a leaf: NumPy and Numba only
    ("core", {"tinygpt.core", "tinygpt.kernels", "tinygpt.errors", "tinygpt.files"}),  # no op
])
def test_engine_layers_import_only_leftwards(package, allowed):
    import pathlib
    for path in sorted((tinygpt_package_dir() / package).glob("*.py")):
        # core/tensor.py's methods call the ops, which it imports last, below every definition
        here = allowed | {"tinygpt.ops"} if (package, path.name) == ("core", "tensor.py") else allowed
        for name in _tinygpt_imports(path, package):
            assert ".".join(name.split(".")[:2]) in here, f"{path.name} imports {name}"


def test_core_tensor_imports_the_ops_only_after_its_definitions():
    import ast
    import pathlib
    body = ast.parse((tinygpt_package_dir() / "core" / "tensor.py").read_text()).body
    last_def = max(i for i, node in enumerate(body) if isinstance(node, (ast.FunctionDef, ast.ClassDef)))
    ops = [i for i, node in enumerate(body) if isinstance(node, ast.ImportFrom)
           and (node.module or "").startswith("ops")]
    assert ops and min(ops) > last_def, "core/tensor.py imports the ops before Tensor is defined"


def tinygpt_package_dir():
    """The package under test (the source tree, or the installed wheel in CI's second pass)."""
    import pathlib
    import tinygpt
    return pathlib.Path(tinygpt.__file__).parent
