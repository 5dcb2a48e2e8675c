"""bench/quant.py --prefill / --torch-bf16 and bench/quant_quality.py keep running: their --smoke passes check each
product form against the NumPy reference before timing it, and compute every quality column for
float32, bf16 and q8 (tiny models: the figures are for bench/README.md, this only guards the code)."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_prefill_bench_checks_and_times_every_form():
    out = _run(os.path.join(ROOT, "bench", "quant.py"), "--prefill", "--smoke")
    for form in ("float32 np.matmul", "bf16 tiles+BLAS", "bf16 Numba GEMM", "q8 tiles+BLAS", "q8 Numba GEMM"):
        assert f"{form} ms" in out
    assert len(re.findall(r"^\| 256 x 64 +\| +(5|16) \|", out, re.M)) == 2


def test_torch_bf16_bench_checks_every_form_then_prints_its_rates():
    pytest.importorskip("torch")
    out = _run(os.path.join(ROOT, "bench", "quant.py"), "--torch-bf16", "--smoke")
    assert "avx512_bf16 " in out, out
    row = re.search(r"^\| 256 x 64 +\| +16 \|(.*)\|$", out, re.M)
    assert row and all(float(c) > 0 for c in row.group(1).split("|")), out


def test_quality_bench_compares_each_format_with_float32():
    out = _run(os.path.join(ROOT, "bench", "quant_quality.py"), "--smoke")
    for fmt in ("float32", "bf16", "q8"):
        rows = re.findall(rf"^\| {fmt} +\|(.*)$", out, re.M)
        assert len(rows) == 2, out  # the random Qwen3 and the trained model
        for row in rows:
            cells = [c.strip() for c in row.split("|") if c.strip()]
            kl_mean, top1 = float(cells[-5]), float(cells[-3])
            # float32 against itself: no divergence; the rounded formats: small but not zero
            assert (kl_mean == 0 and top1 == 1) if fmt == "float32" else 0 < kl_mean < 1e-2
