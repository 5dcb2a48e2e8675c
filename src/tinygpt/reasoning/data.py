"""Math problems to grade: the shipped MATH-500 test set, or any JSON list of objects with a
`problem` and an `answer` (strings; other keys are kept).

Each problem gets an `id`: its `unique_id` when it has one (MATH-500: "test/precalculus/807.json"),
else its position in the list as a string. `tinygpt eval-math` keys its resumable output on it."""
import json
import pathlib

from ..assets import asset_path
from ..errors import InputError
from ..files import read_text

MATH500 = "math500_test.json"


def load_math500_test() -> list:
    """The 500 MATH-500 test problems shipped with tinygpt (see assets/SOURCES.md), each a dict
    with problem, solution, answer, subject, level, unique_id and id."""
    return load_math_problems(asset_path(MATH500))


def load_math_problems(path) -> list:
    """The JSON list at `path` as problem dicts with an `id`. Refuses, naming the file and the first
    bad entry: a missing file, text that is not JSON, JSON that is not a non-empty list, an entry
    that is not an object or lacks a string `problem` or `answer`, and repeated ids."""
    path = pathlib.Path(path)
    text = read_text(path, "math problems file")
    try:
        entries = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise InputError(f"{path}: not valid JSON ({str(err)[:200]})") from None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: expected a non-empty JSON list of objects with 'problem' and "
                         f"'answer', got {type(entries).__name__}"
                         + (" (empty)" if entries == [] else ""))
    problems, seen = [], set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError(f"{path}: entry {i} is a {type(entry).__name__}, not an object with "
                             "'problem' and 'answer'")
        for key in ("problem", "answer"):
            if not isinstance(entry.get(key), str):
                got = "missing" if key not in entry else f"a {type(entry[key]).__name__}"
                raise InputError(f"{path}: entry {i} has no string {key!r} ({got}); each entry "
                                 "needs 'problem' and 'answer'")
        pid = str(entry.get("id", entry.get("unique_id", i)))
        if pid in seen:
            raise InputError(f"{path}: entry {i} repeats the id {pid!r}")
        seen.add(pid)
        problems.append({**entry, "id": pid})
    return problems
