"""bench/kernels.py, bench/quant.py and bench/generate_families.py keep running: a one-kernel,
one-thread pass prints its table, the side-by-side summary and the matmul-rule check; the
quantized-GEMV kernels' smoke run; the family decode bench on tiny configs (the full benches are
for quiet machines; this only guards the code)."""
import os
import re
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


def test_quant_kernel_bench_checks_every_form_then_times_it():
    # bench/quant.py keeps the slow nested q8 loop (the shape kernels/quant_gemv.py explains away)
    # and asserts every form equals the NumPy reference before timing it
    res = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "quant.py"), "--kernels", "--smoke"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    for row in ("| float32 (gemv_numba)", "| bf16 (widened", "| q8 flat loop", "| q8 nested per-block loops"):
        assert row in res.stdout, res.stdout


def test_family_decode_bench_checks_tokens_then_times_both_runners():
    # bench/generate_families.py asserts tinygpt and transformers agree on the greedy tokens
    # before it times them (tiny Gemma 3 and Qwen3 MoE configs here; the real shapes are slow)
    pytest.importorskip("transformers")
    res = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "generate_families.py"), "--smoke"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {tuple(c.strip() for c in line.split("|")[1:4]) for line in res.stdout.splitlines()}
    for model in ("gemma3-270m", "qwen3-moe"):
        assert f"{model}: " in res.stdout and "greedy tokens agree" in res.stdout, res.stdout
        for runner in ("tinygpt", "transformers"):
            assert {(model, runner, "1"), (model, runner, "2")} <= rows, res.stdout


def test_chapter5_products_bench_times_the_products_inside_each_segment():
    # bench/ch05_products.py on the tiny config: both sides run a step and an evaluation; tinygpt's
    # products, timed inside its run, fit within each segment's wall time, and the book's side
    # times the very products tinygpt recorded
    pytest.importorskip("llms_from_scratch")
    res = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "ch05_products.py"), "--config", "tiny",
                          "--steps", "1", "--threads", "1"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {}
    for line in res.stdout.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 8 and cells[0] in ("tinygpt", "torch"):
            rows[cells[0], cells[1]] = cells
    for seg in ("step", "evaluation"):
        wall, in_run, alone = (float(x) for x in rows["tinygpt", seg][2:5])
        assert 0 < in_run <= wall and alone > 0, rows
        assert float(rows["torch", seg][4]) > 0, rows   # the same products, with torch.matmul
    assert "With nothing but its Linear products taking time" in res.stdout
    # train_step.py's measure for the step: its bound over the step's wall time, as the table's
    got = re.search(r"GFLOP/s is ([\d.]+) s; the step took ([\d.]+) s, (\d+)% of GEMM", res.stdout)
    assert got and got[2] == rows["tinygpt", "step"][2], res.stdout
    assert abs(int(got[3]) - 100 * float(got[1]) / float(got[2])) <= 1, got[0]   # printed rounded
