"""examples/reasoning_grpo.py on a few steps: SFT then GRPO on the generated addition task, the
held-out accuracies before and after printed per seed, the reward curve plotted. (Its full run,
minutes long, is timed in the README.)"""
import importlib.util
import pathlib

import pytest

pytest.importorskip("sympy")
EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "reasoning_grpo.py"


def load_example():
    spec = importlib.util.spec_from_file_location("reasoning_grpo", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tokenizer_and_problems():
    demo = load_example()
    tok = demo.ArithmeticTokenizer()
    text = "37+45=\\boxed{82}"
    assert tok.decode(tok.encode(text)) == text and len(tok.encode(text)) == 10
    import numpy as np
    rng = np.random.default_rng(0)
    held = demo.make_problems(20, rng)
    train = demo.make_problems(500, rng, {p["problem"] for p in held})
    assert not {p["problem"] for p in held} & {p["problem"] for p in train}
    assert all(int(p["answer"]) == sum(map(int, p["problem"].split("+"))) for p in train)


def test_demo_runs_sft_then_grpo_and_plots(tmp_path, capsys):
    demo = load_example()
    results = demo.main(["--seeds", "1", "--sft-steps", "3", "--sft-problems", "40",
                         "--grpo-steps", "2", "--rollouts", "2", "--held-out", "4",
                         "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "seed 0: held-out accuracy" in out and "after GRPO" in out
    assert len(results) == 1 and all(0.0 <= a <= 1.0 for a in results[0])
    assert (tmp_path / "grpo-reward.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "seed0" / "grpo-metrics.csv").read_text().splitlines()) == 3
