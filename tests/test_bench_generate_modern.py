"""bench/generate_modern.py keeps running: its --smoke pass (tiny configs) times every runner,
checks they agree on the greedy tokens and measures load_pretrained's peak RSS in a child (the
real 0.6B/1B figures are for a quiet machine; this only guards the code)."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llms_from_scratch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_modern_generation_bench_smoke():
    res = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "generate_modern.py"), "--smoke"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    for model in ("qwen3-0.6b", "llama3.2-1b"):
        for runner in ("tinygpt", "book-kv-cache", "transformers"):
            assert f"| {model} |" in out and f"{runner} |" in out
    assert out.count("load_pretrained + for_inference: peak RSS") == 2
    assert "WARNING" not in out
