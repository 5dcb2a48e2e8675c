"""The example scripts: each prints its help (usage and what it does and writes) without doing any
work, and the cheap ones write what their help says where it says."""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def run_example(script, *args, cwd, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TINYGPT_HOME": str(cwd / "home")}
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_every_example_is_covered():
    assert {p.name for p in EXAMPLES} >= {"ch02_text.py", "ch03_attention.py", "ch04_gpt.py",
                                          "ch05_pretrain.py", "ch05_gpt2_generate.py",
                                          "ch06_classify.py", "ch07_instruct.py", "mlp.py"}


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_help_prints_usage_and_description_without_working(script, tmp_path):
    done = run_example(script, "--help", cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:"), done.stdout[:200]
    first_line = script.read_text(encoding="utf-8").split('"""')[1].strip().splitlines()[0]
    assert first_line in done.stdout  # the docstring: what the script does and writes
    assert list(tmp_path.iterdir()) == []  # no runs/ folder, no download cache: nothing ran


@pytest.mark.parametrize("script, args, flag", [
    ("mlp.py", ["--steps", "0"], "--steps"), ("ch05_pretrain.py", ["--epochs", "-1"], "--epochs"),
    ("ch05_gpt2_generate.py", ["--temperature", "nan"], "--temperature"),
    ("ch07_instruct.py", ["--lora-rank", "0"], "--lora-rank"),
    ("qwen3_chat.py", ["--max-new-tokens", "0"], "--max-new-tokens"),
    ("ch06_classify.py", ["--lr", "nan"], "--lr"), ("ch06_classify.py", ["--epochs", "0"], "--epochs"),
])
def test_bad_numbers_are_refused_before_any_work(script, args, flag, tmp_path):
    """The examples take the CLI's argument types: a count below 1 or a non-finite number is one
    usage line naming the flag (exit 2), before anything is built, downloaded or written."""
    done = run_example(ROOT / "examples" / script, *args, cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"error: argument {flag}:" in done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr and list(tmp_path.iterdir()) == []


def test_ch03_writes_its_heatmap_under_runs_ch03(tmp_path):
    pytest.importorskip("matplotlib")
    done = run_example(ROOT / "examples" / "ch03_attention.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    png = tmp_path / "runs" / "ch03" / "attention-weights.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["attention-weights.png"]  # no temp left
    assert png.stat().st_mode & 0o777 == 0o666 & ~_umask()  # the mode a plain open() gives
    assert str(pathlib.Path("runs") / "ch03" / "attention-weights.png") in done.stdout


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_times_the_help_gives_are_the_readmes():
    # ch06 once said "a few minutes" in its help and "~1 min" in the README; both now say what was
    # measured (about a minute of CPU)
    help_text = run_example(ROOT / "examples" / "ch06_classify.py", "--help",
                            cwd=ROOT, timeout=60).stdout
    assert "about a minute of" in " ".join(help_text.split()) and "a few minutes" not in help_text
    readme = ROOT / "README.md"
    if readme.is_file():  # beside the tests in a checkout (not in CI's copy for the wheel pass)
        rows = readme.read_text().splitlines()
        row = next(line for line in rows if line.startswith("| `examples/ch06_classify.py`"))
        assert "~1 min of CPU" in row
