"""What a user installs is the whole package: every module and asset of the source tree.

Run against an editable install (the README's command 2) the installed package *is* the source
tree, so the test checks what setuptools will put in a wheel: every folder of modules is a
package (has `__init__.py`; `packages = find:` skips one without it) and every asset matches
`package_data`. Run against a wheel (`.ci/run` does both), it compares the installed files with
the source tree the tests came from, file by file."""
import configparser
import fnmatch
import os
import pathlib
import subprocess
import sys

import pytest

import tinygpt

REPO = pathlib.Path(__file__).resolve().parents[1]
# .ci/run copies the tests away from the source tree to test an installed wheel; it says where
# the source tree is, so the wheel can be compared with it
SOURCE = pathlib.Path(os.environ.get("TINYGPT_SOURCE_TREE", REPO / "src" / "tinygpt")).resolve()
INSTALLED = pathlib.Path(tinygpt.__file__).resolve().parent


def _shipped_files(package_dir: pathlib.Path) -> set:
    """Modules and data files below `package_dir`, as paths relative to it."""
    return {str(p.relative_to(package_dir)) for p in package_dir.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".nbi", ".nbc")}


def _package_data_globs() -> dict:
    cfg = configparser.ConfigParser()
    cfg.read(SOURCE.parents[1] / "setup.cfg")
    return {pkg: [g.strip() for g in globs.split(",") if g.strip()]
            for pkg, globs in cfg["options.package_data"].items()}


@pytest.mark.skipif(not SOURCE.is_dir(), reason="needs the source tree beside the tests")
def test_every_module_folder_is_a_package():
    for folder in [SOURCE, *(p for p in SOURCE.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
        if any(folder.glob("*.py")):
            assert (folder / "__init__.py").is_file(), \
                f"{folder.relative_to(SOURCE.parent)} has modules but no __init__.py: a wheel would leave it out"


@pytest.mark.skipif(not SOURCE.is_dir(), reason="needs the source tree beside the tests")
def test_every_asset_is_declared_as_package_data():
    globs = _package_data_globs()["tinygpt.assets"]
    for path in (SOURCE / "assets").iterdir():
        if path.is_file() and path.suffix != ".py":
            assert any(fnmatch.fnmatch(path.name, g) for g in globs), \
                f"asset {path.name} matches no package_data glob {globs}: a wheel would leave it out"


@pytest.mark.skipif(INSTALLED == SOURCE, reason="an editable install is the source tree itself")
def test_installed_package_holds_every_source_file():
    source, installed = _shipped_files(SOURCE), _shipped_files(INSTALLED)
    missing, extra = sorted(source - installed), sorted(installed - source)
    assert not missing, f"the installed package at {INSTALLED} lacks {missing}"
    assert not extra, f"the installed package at {INSTALLED} has files the source tree lacks: {extra}"
    for rel in source:
        assert (SOURCE / rel).read_bytes() == (INSTALLED / rel).read_bytes(), \
            f"{rel} differs between the source tree and the installed package"


def test_version_command_prints_the_package_version(tmp_path):
    # from a folder of its own, and from a parent holding a folder named tinygpt (what a default
    # `git clone` leaves beside you): the src/ layout keeps that folder from shadowing the package
    (tmp_path / "tinygpt" / "tests").mkdir(parents=True)
    for cwd in (tmp_path / "tinygpt", tmp_path):
        out = subprocess.run([sys.executable, "-m", "tinygpt", "--version"], capture_output=True,
                             text=True, timeout=120, cwd=cwd)
        assert out.returncode == 0, f"from {cwd}: {out.stderr}"
        assert out.stdout.strip() == f"tinygpt {tinygpt.__version__}"
