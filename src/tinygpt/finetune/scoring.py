"""Scoring instruction responses (book chapter 7): offline, ROUGE-L F1 and exact match against
the reference output; and section 7.8's judge, a model served by Ollama (`/api/chat`) scoring
each response 0-100. Used by tinygpt/finetune/instruct.py."""
import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request

from tqdm.auto import tqdm

from ..data.instruct import format_input
from ..errors import InputError, ServiceError

OLLAMA_URL = "http://localhost:11434/api/chat"


# --- offline scores -----------------------------------------------------------------------------

def _words(text: str) -> list:
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge_l_f1(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased words: the longest common subsequence as precision
    (over the candidate) and recall (over the reference), harmonic mean. 1.0 if both empty."""
    c, r = _words(candidate), _words(reference)
    if not c or not r:
        return float(c == r)
    prev = [0] * (len(r) + 1)  # LCS table, one row at a time
    for wc in c:
        cur = [0]
        for j, wr in enumerate(r):
            cur.append(prev[j] + 1 if wc == wr else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def offline_scores(entries, key="model_response") -> dict:
    """Adds `rouge_l_f1` and `exact_match` (same words, case and punctuation ignored) to every
    entry in place; returns their means over the entries. No entries: InputError (a mean over
    nothing is no score)."""
    if not entries:
        raise InputError("no entries to score: the test split is empty (give more data)")
    for e in entries:
        e["rouge_l_f1"] = round(rouge_l_f1(e[key], e["output"]), 4)
        e["exact_match"] = _words(e[key]) == _words(e["output"])
    n = len(entries)
    return {"rouge_l_f1": sum(e["rouge_l_f1"] for e in entries) / n,
            "exact_match": sum(e["exact_match"] for e in entries) / n, "num_entries": len(entries)}


# --- Ollama judge (section 7.8) -----------------------------------------------------------------

def query_ollama(prompt: str, model: str = "llama3", url: str = OLLAMA_URL,
                 timeout: float = 300.0) -> str:
    """POST the book's /api/chat request and join the streamed answer (JSON lines, each with
    message.content, the last with "done": true). Raises ConnectionError when the server is
    unreachable, times out or drops the connection mid-answer; ValueError on an HTTP error
    (e.g. an unknown model) or a malformed answer."""
    data = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "options": {"seed": 123, "temperature": 0, "num_ctx": 2048}}
    request = urllib.request.Request(url, data=json.dumps(data).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json"})
    host = urllib.parse.urlsplit(url).hostname
    handlers = [urllib.request.ProxyHandler({})] if host in ("localhost", "127.0.0.1", "::1") else []
    opener = urllib.request.build_opener(*handlers)  # a local server is never reached via a proxy
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise InputError(f"Ollama at {url} answered HTTP {err.code}: {_error_text(err)}"
                         + (f" (try `ollama pull {model}`)" if err.code == 404 else "")) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ServiceError(f"cannot reach Ollama at {url} ({reason}); start it with `ollama "
                           f"serve` and `ollama pull {model}`, or run without the judge") from None
    parts, lineno, done = [], 0, False
    with response:
        while not done:
            try:
                line = response.readline()
            except (OSError, http.client.HTTPException) as err:  # reset, IncompleteRead, timeout
                raise ServiceError(f"Ollama at {url} dropped the connection after {lineno} "
                                   f"answer lines ({type(err).__name__})") from None
            if not line:
                raise ServiceError(f"Ollama at {url} dropped the connection: the answer ended "
                                   f"after {lineno} lines without \"done\": true")
            lineno += 1
            if line.strip():
                content, done = _parse_line(line, lineno, url)
                parts.append(content)
    return "".join(parts)


def _error_text(err) -> str:
    try:
        body = err.read().decode("utf-8", "replace")
        return json.loads(body).get("error", body)
    except (OSError, ValueError, AttributeError):  # no body, not JSON, not an object
        return str(err.reason)


def _parse_line(line: bytes, lineno: int, url: str):
    """One streamed line -> (message.content, done)."""
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"malformed answer from Ollama at {url}: line {lineno} is not JSON: "
                         f"{line[:80]!r}") from None
    if isinstance(obj, dict) and "error" in obj:
        raise InputError(f"Ollama at {url} reported an error: {obj['error']}")
    message = obj.get("message") if isinstance(obj, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise InputError(f"malformed answer from Ollama at {url}: line {lineno} has no "
                         f"message.content string: {line[:80]!r}")
    return content, obj.get("done") is True


def judge_prompt(entry, key="model_response") -> str:
    """Section 7.8's scoring prompt."""
    return (f"Given the input `{format_input(entry)}` "
            f"and correct output `{entry['output']}`, "
            f"score the model response `{entry[key]}`"
            f" on a scale from 0 to 100, where 100 is the best score. "
            f"Respond with the integer number only.")


def parse_score(text: str):
    """The integer 0-100 in a judge's answer ("85", " 85.", "Score: 85"), else None."""
    match = re.search(r"\d+", text)
    value = int(match.group()) if match else None
    return value if value is not None and 0 <= value <= 100 else None


def score_with_ollama(entries, model: str = "llama3", url: str = OLLAMA_URL,
                      key: str = "model_response", timeout: float = 300.0, quiet: bool = False):
    """Section 7.8: ask the judge to score every entry's response 0-100. Returns one score per
    entry (None where the answer held no score, as the book skips those). Server problems
    raise (see `query_ollama`)."""
    scores = []
    # disable=None: no bar when stderr is not a terminal (a log would get its carriage returns)
    for entry in tqdm(entries, desc=f"scoring ({model})", unit="entry",
                      disable=True if quiet else None, dynamic_ncols=True):
        scores.append(parse_score(query_ollama(judge_prompt(entry, key), model, url, timeout)))
    return scores
