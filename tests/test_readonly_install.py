"""tinygpt works wherever it is installed: with no writable folder for Numba's compile cache (a
read-only install, a service account whose home is read-only) and with a damaged cache, the
command still runs; the kernels compile without the cache and one stderr line says so.

Tests run as root, and root ignores file permissions. The child is made an ordinary user: uid
65534 (nobody) when that user can reach this Python, else root without the capabilities that
override permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER are dropped from the
bounding set, so the exec'd Python never gets them back). Each test first checks that the child
really cannot write its home."""
import ctypes
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import pytest

import tinygpt

TINY = {"vocab_size": 50257, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
        "drop_rate": 0.0, "qkv_bias": False}
_PR_CAPBSET_DROP = 24
_CAPS_THAT_IGNORE_PERMISSIONS = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


def _reachable_by_others(path) -> bool:
    """Whether a user who owns nothing can read `path` (every folder above it searchable)."""
    path = pathlib.Path(path).resolve()
    for folder in path.parents:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def _drop_privileges():
    """A preexec_fn that makes the child an ordinary user, or None if this process is one."""
    if os.geteuid() != 0:
        return None
    if _reachable_by_others(sys.executable) and _reachable_by_others(pathlib.Path(tinygpt.__file__)):
        def become_nobody():
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        return become_nobody
    libc = ctypes.CDLL(None, use_errno=True)

    def drop_capabilities():
        for cap in _CAPS_THAT_IGNORE_PERMISSIONS:
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    return drop_capabilities


@pytest.fixture(scope="module")
def readonly(tmp_path_factory):
    """A read-only home, a read-only copy of the package, and a tiny checkpoint."""
    if os.name != "posix":
        pytest.skip("file permissions as tested here are POSIX")
    root = tmp_path_factory.mktemp("readonly")
    home, site = root / "home", root / "site"
    home.mkdir()
    shutil.copytree(pathlib.Path(tinygpt.__file__).parent, site / "tinygpt",
                    ignore=shutil.ignore_patterns("__pycache__"))
    from tinygpt.model.gpt import GPTModel
    from tinygpt.train.checkpoint import save_checkpoint
    tinygpt.manual_seed(0)
    ckpt = save_checkpoint(root / "tiny.safetensors", GPTModel(TINY), config=TINY)
    for path in (site, home):
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222 | (0o555 if p.is_dir() else 0o444))
    for p in (root, *root.parents):
        if p.stat().st_mode & 0o005 != 0o005 and p != pathlib.Path("/"):
            p.chmod(p.stat().st_mode | 0o005)  # tmp folders are 0700; the child must reach its files
    ckpt.chmod(0o444)
    yield {"home": home, "site": site, "ckpt": ckpt, "root": root}
    for p in [site, home, *site.rglob("*"), *home.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)


def _run(readonly, *args, code=None, **env_extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH", "XDG_CACHE_HOME")}
    env.update(HOME=str(readonly["home"]), PYTHONPATH=str(readonly["site"]), **env_extra)
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "tinygpt", *args]
    return subprocess.run(cmd, env=env, cwd=readonly["root"], capture_output=True, text=True,
                          timeout=600, preexec_fn=_drop_privileges())


def test_child_cannot_write_home_or_package(readonly):
    probe = ("import pathlib, sys\n"
             "for folder in sys.argv[1:]:\n"
             "    try:\n"
             "        (pathlib.Path(folder) / 'probe').write_text('x')\n"
             "        print('wrote', folder)\n"
             "    except PermissionError:\n"
             "        print('refused')\n")
    out = _run(readonly, code=probe.replace("sys.argv[1:]",
                                            repr([str(readonly["home"]), str(readonly["site"] / "tinygpt")])))
    assert out.stdout.split() == ["refused", "refused"], out.stdout + out.stderr


def test_version_and_generate_on_a_read_only_install(readonly):
    out = _run(readonly, "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"tinygpt {tinygpt.__version__}", out.stderr
    notes = out.stderr.strip().splitlines()
    assert len(notes) == 1 and "Numba" in notes[0] and "NUMBA_CACHE_DIR" in notes[0], out.stderr
    out = _run(readonly, "generate", "--model", readonly["ckpt"], "--prompt", "hi",
               "--max-new-tokens", "3")
    assert out.returncode == 0 and out.stdout.startswith("hi"), out.stderr
    assert "Traceback" not in out.stderr
    assert sum("Numba" in line for line in out.stderr.splitlines()) == 1, out.stderr


def test_writable_cache_dir_is_used_and_silent(readonly, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    out = _run(readonly, "generate", "--model", readonly["ckpt"], "--prompt", "hi",
               "--max-new-tokens", "2", NUMBA_CACHE_DIR=str(cache))
    assert out.returncode == 0, out.stderr
    assert "Numba" not in out.stderr, out.stderr
    assert list(cache.rglob("*.nbi")), "the kernels should have been cached"


def _generate(cache, *extra):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["NUMBA_CACHE_DIR"] = str(cache)
    return subprocess.run([sys.executable, "-m", "tinygpt", "generate", *map(str, extra),
                           "--prompt", "hi", "--max-new-tokens", "3"], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("damaged", ["nbi", "nbc"])
def test_damaged_cache_files_are_compiled_afresh(readonly, tmp_path, damaged):
    cache = tmp_path / "cache"
    first = _generate(cache, "--model", readonly["ckpt"])
    assert first.returncode == 0, first.stderr
    files = list(cache.rglob(f"*.{damaged}"))
    assert files, "the first run should have filled the cache"
    for f in files:
        f.write_bytes(b"garbage, not a pickle")
    out = _generate(cache, "--model", readonly["ckpt"])
    assert out.returncode == 0 and out.stdout == first.stdout, out.stderr
    notes = [line for line in out.stderr.splitlines() if "Numba cache" in line]
    assert len(notes) == 1 and "ignoring an unreadable Numba cache entry" in notes[0], out.stderr
    healed = _generate(cache, "--model", readonly["ckpt"])  # the fresh compiles were saved
    assert healed.returncode == 0 and "Numba" not in healed.stderr, healed.stderr


def test_import_says_nothing_when_the_cache_works():
    out = subprocess.run([sys.executable, "-c", "import tinygpt"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stderr == "" and out.stdout == "", out.stderr
