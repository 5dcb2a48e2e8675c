"""What the chapter-7 examples say about their offline models (issue 37.6): far too small to
follow instructions, what the run does show, and the command for a model that answers; a run
from GPT-2 weights says none of it. The fine-tuning itself is replaced by a recorded summary (the
real runs take minutes; tests/test_instruct.py and tests/test_dpo_run.py run them small)."""
import importlib.util
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


INSTRUCT_RESULT = {"scores": {"offline": {"num_entries": 110, "rouge_l_f1": 0.18, "exact_match": 0.0}},
                   "train_losses": [3.0, 2.0], "val_losses": [3.1, 2.2], "train_seconds": 60.0,
                   "generate_seconds": 30.0, "responses": "r.json", "checkpoint": "m.safetensors"}
DPO_RESULT = {"tracking": {"train_losses": [0.69, 0.6], "val_losses": [0.69, 0.65]},
              "val_loss": 0.65, "val_reward_margin": 0.4, "train_seconds": 60.0,
              "responses": "r.json", "checkpoint": "m.safetensors"}


@pytest.mark.parametrize("name, function, result", [
    ("ch07_instruct", "run_instruction_finetune", INSTRUCT_RESULT),
    ("ch07_dpo", "run_dpo", DPO_RESULT),
])
@pytest.mark.parametrize("weights", [None, "gpt2-medium (355M)"])
def test_offline_runs_say_what_the_small_model_can_show(tmp_path, monkeypatch, capsys, name,
                                                        function, result, weights):
    example = load_example(name)
    calls = []
    monkeypatch.setattr(example, function, lambda **kwargs: calls.append(kwargs) or result)
    (tmp_path / "model.safetensors").write_bytes(b"")  # ch07_dpo: chapter 7 has run
    example.main(["--out", str(tmp_path / "out"), "--quiet"]
                 + (["--model", str(tmp_path)] if name == "ch07_dpo" else [])
                 + (["--weights", weights] if weights else []))
    out = " ".join(capsys.readouterr().out.split())  # the note's line breaks aside
    assert len(calls) == 1
    said = "far too small to follow instructions" in out
    assert said == (weights is None), out
    if said:
        assert '--weights "gpt2-medium (355M)"' in out and "a long CPU run" in out
        assert ("reward margin rising above 0" if name == "ch07_dpo" else "the loss curve") in out
