"""examples/qwen3_chat.py runs offline on its tiny random Qwen3: the message goes into Qwen3's chat
template (thinking off by default, on with --thinking) and a reply is streamed."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(ROOT / "examples" / "qwen3_chat.py"), *args], env=env,
                          capture_output=True, text=True, check=True, timeout=300).stdout


def test_offline_demo_chats_through_the_template():
    out = run("--max-new-tokens", "8")
    assert "Qwen3Model:" in out and "(<|im_end|>)" in out
    assert ("chat prompt (" in out and "'<|im_start|>user\\nGive me a short introduction to large "
            "language models.<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n'" in out)
    assert out.rstrip("\n").splitlines()[-1].startswith("model> ")


def test_thinking_leaves_the_think_block_to_the_model():
    out = run("--thinking", "-m", "Hi", "-m", "Bye", "--max-new-tokens", "4")
    assert "'<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'" in out
    assert "'<|im_start|>user\\nBye<|im_end|>\\n<|im_start|>assistant\\n'" in out
    assert out.count("model> ") == 2
