"""bench/reasoning.py keeps running: its smoke pass (a tiny Qwen3, short answers) prints the
generation table, one at a time against batched, with the batched greedy answers checked equal
to the one-at-a-time ones, and the GRPO step's phases (the full runs are for bench/README.md)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_reasoning_bench_smoke():
    res = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "reasoning.py"), "--smoke"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    for row in ("| tiny: 4 prompts (16-64 tokens)", "| tiny: 4 samples of one 32-token prompt",
                "| tiny: rollouts decoded together (4 x 8 tokens)", "| tiny: backward",
                "| tiny: step, rollouts one at a time", "| tiny: clip + AdamW step"):
        assert row in out, out
