"""bench/kernels.py keeps running: a one-kernel, one-thread pass prints its table, the side-by-side
summary and the matmul-rule check (the full bench is for quiet machines; this only guards the code)."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_kernel_bench_runs_and_summarises():
    res = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "kernels.py"), "--quick", "--threads", "1",
                          "--only", "layernorm", "--no-compile"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    assert "| layernorm fwd" in out and "| layernorm bwd" in out
    assert "## Summary" in out
    assert "matmul rule: " in out
