"""docs/reliability.md lists each bad-input family with the tests that cover it: every test file,
test function and source path it names exists."""
import ast
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(os.environ.get("TINYGPT_SOURCE_TREE", ROOT / "src" / "tinygpt")).resolve()
REPO = PACKAGE.parents[1]
DOC = REPO / "docs" / "reliability.md"
TEST_REF = re.compile(r"`(tests/test_\w+\.py)(?:::(\w+))?")
SOURCE_REF = re.compile(r"`((?:weights|train|model|finetune|core|ops|nn)/\w+\.py)`")


def test_every_test_the_page_names_exists():
    refs = TEST_REF.findall(DOC.read_text())
    assert len(refs) >= 15, "the page points to the tests of each family"
    missing = []
    for path, name in refs:
        file = REPO / path
        if not file.is_file():
            missing.append(path)
        elif name and name not in {n.name for n in ast.parse(file.read_text()).body
                                   if isinstance(n, ast.FunctionDef)}:
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"


def test_every_source_file_the_page_names_exists():
    refs = SOURCE_REF.findall(DOC.read_text())
    assert refs
    missing = [p for p in refs if not (PACKAGE / p).is_file()]
    assert not missing, f"docs/reliability.md names files that do not exist: {missing}"


def test_the_page_has_the_eight_families():
    headings = re.findall(r"^## (\d)\. ", DOC.read_text(), flags=re.M)
    assert headings == [str(i) for i in range(1, 9)]
