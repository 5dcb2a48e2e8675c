"""tinygpt must import, and train a step, with torch absent: torch is a test/bench dependency only."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

HIDE_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name.startswith("transformers"):
            raise ImportError("torch is hidden for this test")
        return None
sys.meta_path.insert(0, _NoTorch())
import numpy as np
import tinygpt, tinygpt.nn, tinygpt.optim
for mod in ("tinygpt.model", "tinygpt.tokenizer", "tinygpt.data", "tinygpt.weights", "tinygpt.train",
            "tinygpt.finetune", "tinygpt.cli"):
    try:
        __import__(mod)
    except ModuleNotFoundError as err:
        if err.name != mod:  # a missing optional layer is fine; a missing dependency is not
            raise
lin = tinygpt.nn.Linear(3, 2)
tinygpt.nn.functional.cross_entropy(lin(tinygpt.randn(4, 3)), np.array([0, 1, 1, 0])).backward()
assert "torch" not in sys.modules
print("ok")
"""


def test_import_without_torch():
    out = subprocess.run([sys.executable, "-c", HIDE_TORCH], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
