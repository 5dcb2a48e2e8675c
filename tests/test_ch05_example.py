"""examples/ch05_pretrain.py as a reader runs it: `--schedule` (appendix D, as the README
suggests) parses and trains with warm-up and cosine decay; resuming keeps the schedule."""
import os
import subprocess
import sys

from tinygpt.train import read_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "examples", "ch05_pretrain.py"), *args],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.path.join(REPO, "src")})


def test_schedule_parses_and_trains_a_tiny_config(tmp_path):
    out = tmp_path / "run"
    proc = run_example("--config", "tiny", "--epochs", "1", "--schedule", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "final: train loss" in proc.stdout
    state = read_checkpoint(out / "model.safetensors")[2]
    settings, lrs = state["settings"], state["loop"]["lrs"]
    assert settings["schedule"] is True and settings["lr"] == 4e-4
    peak = lrs.index(max(lrs))
    assert lrs[0] == settings["initial_lr"] and 0 < peak < len(lrs) - 1  # warms up, then decays
    assert max(lrs) <= 4e-4 and lrs[-1] < max(lrs)

    again = run_example("--resume", str(out / "model.safetensors"), "--out", str(out), "--no-schedule")
    assert again.returncode != 0 and "schedule (--schedule): checkpoint True, given False" in again.stderr
