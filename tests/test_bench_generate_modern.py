"""bench/generate_modern.py keeps running: its --smoke pass (tiny configs) times every runner (float32,
bf16 and q8 tinygpt, the book's code in float32 and bf16, transformers), checks the float32 ones
agree on the greedy tokens and measures load_pretrained's peak RSS in a child for each format
(the real 0.6B/1B figures are for a quiet machine; this only guards the code)."""
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llms_from_scratch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNERS = ("tinygpt", "tinygpt-bf16", "tinygpt-q8", "book-kv-cache", "book-kv-cache-bf16", "transformers")


def test_modern_generation_bench_smoke():
    res = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "generate_modern.py"), "--smoke"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    for model in ("qwen3-0.6b", "llama3.2-1b"):
        for runner in RUNNERS:
            fmt = "bf16" if runner.endswith("bf16") else "q8" if runner.endswith("q8") else "float32"
            row = re.search(rf"^\| {model} +\| +{runner} \| +{fmt} \| +1 \| (.*)$", out, re.M)
            assert row, f"no row for {model} {runner}"
            decode, _, _, mb_token, _, bound, *_ = [c.strip() for c in row[1].split("|")]
            float(decode.rstrip(" *")), float(bound)  # numbers (smoke timings: noise, even < 0)
            assert float(mb_token) > 0
        rows = {r: float(re.search(rf"^\| {model} +\| +{r} \|[^|]+\|[^|]+\|[^|]+\|[^|]*\|[^|]*\| +([\d.]+)",
                                   out, re.M)[1]) for r in ("tinygpt", "tinygpt-bf16", "tinygpt-q8")}
        assert rows["tinygpt-q8"] < rows["tinygpt-bf16"] < rows["tinygpt"]  # the bytes a token reads
    for fmt in ("float32", "bf16", "q8"):
        assert out.count(f"load_pretrained + for_inference ({fmt}): peak RSS") == 2
    assert "WARNING" not in out
