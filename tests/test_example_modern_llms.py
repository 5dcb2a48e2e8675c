"""examples/modern_llms.py runs offline: the five models are written in the Hugging Face layout,
loaded, generate, and after a few training steps continue the sequence they were trained on."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_modern_llms_example_runs_and_learns():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "modern_llms.py")], env=env,
                         capture_output=True, text=True, check=True, timeout=300).stdout
    for name in ("Qwen3Model", "Llama3Model", "Gemma3Model", "Olmo3Model", "Qwen3MoeModel"):
        assert f"{name}: wrote config.json, model.safetensors" in out
    assert out.count("after training, greedy: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0") == 5, out
    assert "tinygpt/ops/modern.py" in out
