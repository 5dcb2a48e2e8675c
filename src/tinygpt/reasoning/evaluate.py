"""Evaluating a model on math problems (the sequel's chapter 3: `evaluate_math500_stream`).

Each problem goes through render_prompt, greedy generation up to an end token,
extract_final_candidate and grade_answer; one JSON line per problem is appended to the output
file as soon as it is graded, so an interrupted run resumes where it stopped (problems whose id
is already in the file are skipped; a half-written last line is dropped).

`text_model` is anything with the attributes of `tinygpt.cli.models.TextModel`: `model`,
`tokenizer` (with `decode`), `prompt_ids(text) -> list of ids`, `stop_ids`, `context_length`."""
import json
import os
import pathlib
import time

from ..errors import InputError
from ..model.batched import generate_batched
from .verifier import extract_final_candidate, grade_answer, render_prompt


def read_results(out_path) -> dict:
    """{id: record} of the JSON lines already in `out_path` ({} when it does not exist). A last
    line without its newline (a run killed while writing it) is cut off the file."""
    path = pathlib.Path(out_path)
    if not path.is_file():
        if path.exists():
            raise InputError(f"output {path} is not a file")
        return {}
    raw = path.read_bytes()
    complete = raw[:raw.rfind(b"\n") + 1]
    if len(complete) < len(raw):
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    done = {}
    for n, line in enumerate(complete.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            done[str(record["id"])] = record
        except (ValueError, KeyError, TypeError):
            raise InputError(f"output {path} line {n} is not a result of eval-math (a JSON object "
                             "with an id); give another --out or remove the file") from None
    return done


def evaluate_math_stream(text_model, problems, out_path, max_new_tokens: int = 512,
                         progress=None, batch_size: int = 1, prompt_renderer=render_prompt) -> dict:
    """Grade `text_model` on `problems` (dicts with id, problem, answer), appending one JSON line
    per problem to `out_path`: id, gtruth_answer, extracted, correct, tokens (generated),
    seconds, generated_text. Problems already in the file are not run again. `batch_size` > 1:
    that many problems are generated together (`tinygpt.model.generate_batched`: the same greedy
    answers, faster on Qwen3/Llama), their lines written when the batch ends, each with an equal
    share of the batch's seconds. `progress(record, done, correct, total)` is called after each;
    `prompt_renderer(problem)` makes the prompt text (default: chapter 3's render_prompt).
    Returns {"correct", "total", "accuracy"} over every problem of `problems` (those from
    earlier runs included)."""
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    done = read_results(out_path)
    ids = {p["id"] for p in problems}
    correct = sum(bool(r.get("correct")) for pid, r in done.items() if pid in ids)
    finished = sum(pid in done for pid in ids)
    todo = [row for row in problems if row["id"] not in done]
    with open(out_path, "a", encoding="utf-8") as f:
        for first in range(0, len(todo), batch_size):
            batch = todo[first:first + batch_size]
            for record in _grade_batch(text_model, batch, max_new_tokens, prompt_renderer):
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
                finished, correct = finished + 1, correct + record["correct"]
                if progress is not None:
                    progress(record, finished, correct, len(problems))
    total = len(problems)
    return {"correct": correct, "total": total, "accuracy": correct / total}


def _grade_batch(text_model, rows, max_new_tokens, prompt_renderer) -> list:
    """The records of `rows`, their answers generated together (greedy)."""
    start = time.perf_counter()
    prompts = [text_model.prompt_ids(prompt_renderer(row["problem"])) for row in rows]
    answers = generate_batched(text_model.model, prompts, max_new_tokens, text_model.stop_ids,
                               context_length=text_model.context_length)
    seconds = round((time.perf_counter() - start) / len(rows), 3)
    records = []
    for row, new in zip(rows, answers):
        text = text_model.tokenizer.decode(new)
        extracted = extract_final_candidate(text)
        records.append({"id": row["id"], "gtruth_answer": row["answer"], "extracted": extracted,
                        "correct": bool(grade_answer(extracted, row["answer"])),
                        "tokens": len(new), "seconds": seconds, "generated_text": text})
    return records
