"""Rules of the repository that a test can hold: one tolerance table for the whole suite
(tests/helpers.py TOLERANCES) and no Python file over 400 lines.

Each rule has a PENDING list of files known to break it, with who fixes them; the test fails both
when another file breaks the rule and when a listed file no longer does (so the list only shrinks).
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400

# files still defining their own tolerances: each should take them from helpers.TOLERANCES
PENDING_OWN_BOUNDS = {}
PENDING_LONG_FILES = {}


def _mentions_a_bound(node) -> bool:
    """A dict literal with an "rtol"/"atol" key or a call with an rtol=/atol= keyword, anywhere in node."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Dict) and any(isinstance(k, ast.Constant) and k.value in ("rtol", "atol")
                                             for k in sub.keys):
            return True
        if isinstance(sub, ast.Call) and any(k.arg in ("rtol", "atol") for k in sub.keywords):
            return True
    return False


def tolerance_tables(path):
    """Module-level names in `path` bound to a tolerance (a name with TOL in it, or a value that
    spells out rtol/atol)."""
    names = []
    for stmt in ast.parse(path.read_text()).body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                name = target.id if isinstance(target, ast.Name) else ""
                if "TOL" in name.upper() or (stmt.value is not None and _mentions_a_bound(stmt.value)):
                    names.append(name or ast.unparse(target))
    return names


def test_one_tolerance_table():
    found = {p.name: tolerance_tables(p) for p in sorted((ROOT / "tests").glob("*.py"))}
    found = {name: tables for name, tables in found.items() if tables and name != "helpers.py"}
    extra = {name: tables for name, tables in found.items() if name not in PENDING_OWN_BOUNDS}
    assert not extra, f"tolerance tables outside tests/helpers.py (use helpers.TOLERANCES): {extra}"
    done = sorted(set(PENDING_OWN_BOUNDS) - set(found))
    assert not done, f"{done} no longer define their own tolerances: remove them from PENDING_OWN_BOUNDS"


def test_the_guard_sees_a_tolerance_table(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text("import numpy as np\nTOL = 1e-4\nBOUNDS = {np.float32: dict(rtol=1e-5)}\n"
                      "CFG = {'emb_dim': 4}\n\ndef f():\n    tol = dict(rtol=1.0)\n")
    assert tolerance_tables(sample) == ["TOL", "BOUNDS"]


def test_no_python_file_over_400_lines():
    folders = ("src/tinygpt", "tests", "bench", "examples")
    files = [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 50
    lengths = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in files}
    long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    extra = {name: n for name, n in long.items() if name not in PENDING_LONG_FILES}
    assert not extra, f"files over {MAX_LINES} lines (split them where the code splits naturally): {extra}"
    done = sorted(set(PENDING_LONG_FILES) - set(long))
    assert not done, f"{done} are now {MAX_LINES} lines or fewer: remove them from PENDING_LONG_FILES"
