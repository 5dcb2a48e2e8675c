"""`tinygpt eval-math` end to end on a tiny offline Qwen3 (Hugging Face layout, a local
tokenizer.json): each JSON line must be what greedy decoding of render_prompt(problem) gives,
graded by extract_final_candidate and grade_answer; a second run resumes (skips what is done,
drops a half-written last line); bad input is one line on stderr with exit status 2."""
import json
import subprocess
import sys

import numpy as np
import pytest

from modern_models import TINY_QWEN3
from tinygpt import manual_seed
from tinygpt.cli import main
from tinygpt.model import Qwen3Model, generate
from tinygpt.reasoning import extract_final_candidate, grade_answer, render_prompt
from tinygpt.tokenizer import Qwen3Tokenizer
from tinygpt.weights import save_pretrained_hf
from tokenizer_files import write_qwen3_tokenizer_json

pytest.importorskip("sympy")
MAX_NEW = 6
PROBLEMS = ["What is 1+1?", "Compute 2*3.", "Name a prime."]


def greedy_answer(model, tokenizer, problem):
    """The reply ids greedy decoding gives, cut before the end token (independent of eval-math)."""
    ids = tokenizer.encode(render_prompt(problem))
    out = generate(model, np.asarray([ids]), MAX_NEW, model.cfg["context_length"])
    new = [int(t) for t in out[0, len(ids):]]
    eos = tokenizer.eos_token_id
    return new[:new.index(eos)] if eos in new else new


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(model folder, problems file, the expected records by id without the timing)."""
    folder = tmp_path_factory.mktemp("qwen3-math")
    tokenizer = Qwen3Tokenizer(write_qwen3_tokenizer_json(folder / "tokenizer.json"),
                               apply_chat_template=False)
    manual_seed(5)
    model = Qwen3Model(dict(TINY_QWEN3, vocab_size=320, context_length=256)).eval()
    # the first problem's third token becomes <|endoftext|>: greedy decoding stops there
    first = greedy_answer(model, tokenizer, PROBLEMS[0])
    head = model.out_head.weight.data
    head[[first[2], tokenizer.eos_token_id]] = head[[tokenizer.eos_token_id, first[2]]]
    save_pretrained_hf(model, folder)
    texts = [tokenizer.decode(greedy_answer(model, tokenizer, p)) for p in PROBLEMS]
    # problem 0's answer is what the model says (correct); the others' cannot be
    answers = [extract_final_candidate(texts[0]), "\\frac{7}{9}", "x^{99}"]
    rows = [{"problem": p, "answer": a, "unique_id": f"p{i}"}
            for i, (p, a) in enumerate(zip(PROBLEMS, answers))]
    data = folder / "problems.json"
    data.write_text(json.dumps(rows), encoding="utf-8")
    expected = {}
    for row, text, ids in zip(rows, texts, (greedy_answer(model, tokenizer, p) for p in PROBLEMS)):
        extracted = extract_final_candidate(text)
        expected[row["unique_id"]] = {"id": row["unique_id"], "gtruth_answer": row["answer"],
                                      "extracted": extracted, "tokens": len(ids),
                                      "correct": grade_answer(extracted, row["answer"]),
                                      "generated_text": text}
    assert expected["p0"]["tokens"] == 2 and expected["p0"]["correct"]
    assert not expected["p1"]["correct"]
    return folder, data, expected


def records(path):
    out = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for r in out:
        assert isinstance(r.pop("seconds"), float)
    return out


def test_eval_math_runs_from_the_command_line_and_resumes(setup, tmp_path, capsys):
    folder, data, expected = setup
    out = tmp_path / "results.jsonl"
    cmd = [sys.executable, "-m", "tinygpt", "eval-math", "--model", str(folder), "--data",
           str(data), "--n", "2", "--max-new-tokens", str(MAX_NEW), "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "accuracy 50.0% (1/2)" in run.stdout
    assert "eval-math" in run.stderr and "accuracy 1/2 = 50.0%" in run.stderr  # the progress bar
    assert records(out) == [expected["p0"], expected["p1"]]
    # interrupted while writing a third line: resuming drops it, skips p0 and p1, runs p2
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"id": "p2", "extra')
    before = out.read_text(encoding="utf-8").rsplit("{", 1)[0]
    assert main(cmd[3:8] + ["--out", str(out), "--max-new-tokens", str(MAX_NEW)]) == 0
    assert "accuracy 33.3% (1/3)" in capsys.readouterr().out
    assert out.read_text(encoding="utf-8").startswith(before)
    assert records(out) == [expected["p0"], expected["p1"], expected["p2"]]
    # everything done: nothing runs, nothing is written
    assert main(cmd[3:8] + ["--out", str(out)]) == 0
    assert len(records(out)) == 3


def test_eval_math_batch_size_gives_the_same_lines_and_resumes(setup, tmp_path, capsys,
                                                               monkeypatch):
    """--batch-size 2 decodes problems together (different prompt lengths, p0 stopping early):
    the lines are those of one at a time; a rerun resumes after the first batch."""
    from tinygpt.model.batched import BatchedKVCache
    batches, build = [], BatchedKVCache.from_prompts.__func__
    monkeypatch.setattr(BatchedKVCache, "from_prompts", classmethod(
        lambda cls, caches, lengths, max_len: batches.append(len(caches))
        or build(cls, caches, lengths, max_len)))
    folder, data, expected = setup
    out = tmp_path / "batched.jsonl"
    argv = ["eval-math", "--model", str(folder), "--data", str(data), "--max-new-tokens",
            str(MAX_NEW), "--out", str(out), "--batch-size", "2"]
    assert main(argv + ["--n", "2"]) == 0
    assert records(out) == [expected["p0"], expected["p1"]]
    assert main(argv) == 0
    assert "accuracy 33.3% (1/3)" in capsys.readouterr().out
    assert records(out) == [expected["p0"], expected["p1"], expected["p2"]]
    whole = tmp_path / "whole.jsonl"
    assert main(argv[:-3] + [str(whole), "--batch-size", "3"]) == 0
    assert records(whole) == records(out)
    assert batches == [2, 3]  # p2 alone on resuming: one at a time


def one_line_error(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_eval_math_bad_input_is_one_line(setup, tmp_path, capsys):
    folder, data, _ = setup
    base = ["eval-math", "--model", str(folder), "--out", str(tmp_path / "r.jsonl")]
    assert "nope.json does not exist" in one_line_error(
        base + ["--data", str(tmp_path / "nope.json")], capsys)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"question": "1+1", "answer": "2"}]))
    assert "entry 0 has no string 'problem'" in one_line_error(base + ["--data", str(bad)], capsys)
    err = one_line_error(base + ["--data", str(data), "--n", "0"], capsys)
    assert "--n: must be at least 1, got 0" in err, err
    junk = tmp_path / "junk.jsonl"
    junk.write_text("not json\n")
    assert "junk.jsonl line 1 is not a result of eval-math" in one_line_error(
        ["eval-math", "--model", str(folder), "--data", str(data), "--out", str(junk)], capsys)


def test_finetune_grpo_trains_saves_a_model_eval_math_reads_and_resumes(setup, tmp_path, capsys):
    from tinygpt.reasoning.grpo_train import read_metrics
    folder, data, _ = setup
    out = tmp_path / "grpo"
    argv = ["finetune-grpo", "--model", str(folder), "--data", str(data), "--rollouts", "2",
            "--max-new-tokens", "3", "--temperature", "1.0", "--clip-eps", "0.2",
            "--kl-coeff", "0.01", "--out", str(out)]
    assert main(argv + ["--steps", "2"]) == 0, capsys.readouterr().err
    assert "grpo-metrics.png" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(out / "grpo-metrics.csv")] == [1, 2]
    assert (out / "model" / "config.json").is_file() and (out / "model" / "tokenizer.json").is_file()
    assert main(argv + ["--steps", "3", "--resume"]) == 0
    assert "resuming after step 2" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(out / "grpo-metrics.csv")] == [1, 2, 3]
    results = tmp_path / "after.jsonl"
    assert main(["eval-math", "--model", str(out / "model"), "--data", str(data), "--n", "1",
                 "--max-new-tokens", "3", "--out", str(results)]) == 0
    assert len(records(results)) == 1
    lora = tmp_path / "lora"
    assert main(argv[:-1] + [str(lora), "--steps", "1", "--lora-rank", "2"]) == 0
    assert (lora / "model" / "model.safetensors").is_file()


def test_finetune_grpo_evaluates_held_out_problems_and_skips_zero_advantage(setup, tmp_path):
    from tinygpt.reasoning.grpo_train import read_metrics
    folder, data, expected = setup
    out = tmp_path / "grpo"
    assert main(["finetune-grpo", "--model", str(folder), "--data", str(data), "--steps", "2",
                 "--rollouts", "2", "--max-new-tokens", "3", "--out", str(out), "--eval-every",
                 "2", "--eval-n", "2", "--eval-data", str(data),
                 "--skip-zero-advantage-updates"]) == 0
    metrics = read_metrics(out / "grpo-metrics.csv")
    assert metrics[0]["eval_acc"] is None and metrics[1]["eval_acc"] in (0.0, 1.0)
    assert all(r["skipped"] == float(r["adv_std"] == 0.0) for r in metrics)
    lines = [json.loads(x) for x in (out / "eval-step00002.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == ["p2"]  # p0 and p1 are trained on: only p2 is held out
    assert metrics[1]["eval_acc"] == float(lines[0]["correct"])
