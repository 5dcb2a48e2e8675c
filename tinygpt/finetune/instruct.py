"""Instruction fine-tuning (book chapter 7), optionally with LoRA (appendix E), and evaluation.

`run_instruction_finetune` is the whole chapter as one function, shared by
`examples/ch07_instruct.py` and `tinygpt finetune-instruct`:

  1. the model: GPT-2 weights (`weights="gpt2-medium (355M)"`, a local file or directory, or a
     tinygpt checkpoint), or offline a small GPT briefly pretrained on the training split's text;
  2. optionally LoRA (`lora_rank`): every Linear gets rank-r adapters, the rest is frozen;
  3. the book's training: AdamW, `train_model(schedule=False)`, loss plot;
  4. a response for every test entry (greedy, stop at end-of-text, prompt stripped), saved with
     the entries as JSON, and the model saved;
  5. scores: offline (ROUGE-L F1 and exact match against the reference output, always) and,
     when asked, a judge model served by Ollama (`/api/chat`) scoring 0-100 like the book.
"""
import http.client
import json
import os
import pathlib
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from functools import partial

import numpy as np
from tqdm.auto import tqdm

from ..assets import asset_path
from ..core.random import manual_seed
from ..data import DataLoader, create_dataloader_v1
from ..data.instruct import (
    InstructionDataset,
    custom_collate_fn,
    format_input,
    load_instruction_data,
    split_instruction_data,
)
from ..model import GPTModel
from ..model.generate import generate, text_to_token_ids, token_ids_to_text
from ..optim import AdamW
from ..tokenizer import get_gpt2_tokenizer
from ..train import plot_losses, read_checkpoint, save_checkpoint, train_model
from .lora import merge_lora, replace_linear_with_lora, save_lora
from ..errors import InputError

END_OF_TEXT = 50256
OLLAMA_URL = "http://localhost:11434/api/chat"

# Offline default: a small GPT (6.6M parameters, 6.4M of them the two vocabulary matrices) that
# a 2-core CPU fine-tunes from scratch in a few minutes. Its cost is the 50,257-way output layer
# (logits per token), so extra layers are almost free. It learns the format and common phrasing,
# not much more: the number at the end shows the pipeline works, not a good model.
OFFLINE_CONFIG = {"vocab_size": 50257, "context_length": 160, "emb_dim": 64, "n_heads": 4,
                  "n_layers": 4, "drop_rate": 0.0, "qkv_bias": False}
# Settings by mode: the book's with GPT-2 weights (section 7.6), faster ones offline.
BOOK_SETTINGS = dict(num_epochs=2, lr=5e-5, eval_freq=5, eval_iter=5, max_new_tokens=256,
                     base_epochs=0)
OFFLINE_SETTINGS = dict(num_epochs=2, lr=2e-3, eval_freq=25, eval_iter=3, max_new_tokens=64,
                        base_epochs=0)
OFFLINE_LORA_BASE_EPOCHS = 2  # LoRA needs a base that knows something: pretrain one first


# --- responses ----------------------------------------------------------------------------------

def extract_response(generated_text: str, input_text: str) -> str:
    """Section 7.7: the generated text minus the prompt and the "### Response:" header."""
    return generated_text[len(input_text):].replace("### Response:", "").strip()


def generate_responses(model, entries, tokenizer=None, max_new_tokens=256, context_size=None,
                       key="model_response", quiet=False) -> list:
    """Section 7.7: greedy generation for every entry (stopping at end-of-text); returns new
    dicts, each entry plus `key` (the response with the prompt stripped)."""
    tokenizer = tokenizer or get_gpt2_tokenizer()
    context_size = context_size or model.cfg["context_length"]
    model.eval()
    out = []
    for entry in tqdm(entries, desc="responses", unit="entry", disable=quiet, dynamic_ncols=True):
        input_text = format_input(entry)
        token_ids = generate(model, text_to_token_ids(input_text, tokenizer)[:, -context_size:],
                             max_new_tokens, context_size, eos_id=END_OF_TEXT)
        generated_text = token_ids_to_text(token_ids, tokenizer)
        out.append({**entry, key: extract_response(generated_text, input_text)})
    return out


def write_json_atomic(path, obj) -> pathlib.Path:
    """json.dump(obj, indent=4) to a temporary file beside `path`, then rename it over `path`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=4, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    entry in place; returns their means over the entries."""
    for e in entries:
        e["rouge_l_f1"] = round(rouge_l_f1(e[key], e["output"]), 4)
        e["exact_match"] = _words(e[key]) == _words(e["output"])
    n = max(len(entries), 1)
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
        raise ConnectionError(f"cannot reach Ollama at {url} ({reason}); start it with `ollama "
                              f"serve` and `ollama pull {model}`, or run without the judge") from None
    parts, lineno, done = [], 0, False
    with response:
        while not done:
            try:
                line = response.readline()
            except (OSError, http.client.HTTPException) as err:  # reset, IncompleteRead, timeout
                raise ConnectionError(f"Ollama at {url} dropped the connection after {lineno} "
                                      f"answer lines ({type(err).__name__})") from None
            if not line:
                raise ConnectionError(f"Ollama at {url} dropped the connection: the answer ended "
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
    for entry in tqdm(entries, desc=f"scoring ({model})", unit="entry", disable=quiet,
                      dynamic_ncols=True):
        scores.append(parse_score(query_ollama(judge_prompt(entry, key), model, url, timeout)))
    return scores


# --- the model ----------------------------------------------------------------------------------

def load_base_model(weights, drop_rate: float = 0.0):
    """GPT-2 by name/path (tinygpt.weights.load_gpt2) or a tinygpt checkpoint file."""
    path = pathlib.Path(str(weights))
    if path.is_file() and path.suffix == ".safetensors":
        try:
            model_sd, _, state = read_checkpoint(path)
        except ValueError as err:
            if "not a tinygpt checkpoint" not in str(err):
                raise
        else:
            if not state.get("config"):
                raise InputError(f"{path} records no model config")
            model = GPTModel(state["config"])
            model.load_state_dict(model_sd)
            return model
    from ..weights import load_gpt2
    return load_gpt2(weights, drop_rate=drop_rate)


def pretrain_small_base(train_data, cfg=None, num_epochs=4, batch_size=8, lr=1e-3, seed=123,
                        quiet=False):
    """The offline base model: GPTModel(cfg) trained from scratch on the training entries' text
    (prompt + response, joined by <|endoftext|>) in context-length windows, book chapter 5 style."""
    cfg = dict(cfg or OFFLINE_CONFIG)
    manual_seed(seed)
    model = GPTModel(cfg)
    if num_epochs <= 0:
        return model, None
    text = "<|endoftext|>".join(format_input(e) + f"\n\n### Response:\n{e['output']}"
                                for e in train_data)
    ctx = cfg["context_length"]
    loader = create_dataloader_v1(text, batch_size=batch_size, max_length=ctx, stride=ctx,
                                  shuffle=True, drop_last=True, seed=seed)
    optimizer = AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    if not quiet:
        print(f"pretraining the small offline base ({sum(p.size for p in model.parameters()):,} "
              f"parameters) for {num_epochs} epochs of {len(loader)} batches")
    result = train_model(model, loader, loader, optimizer, num_epochs, eval_freq=10 ** 9,
                         eval_iter=1, start_context=None, tokenizer=None, schedule=False,
                         quiet=quiet)
    return model, result


# --- the whole chapter ------------------------------------------------------------------------

def run_instruction_finetune(weights=None, data_path=None, out_dir="runs/instruct", num_epochs=None,
                             batch_size=8, lr=None, weight_decay=0.1, lora_rank=None,
                             lora_alpha=None, mask_prompt=False, allowed_max_length=None,
                             eval_freq=None, eval_iter=None, max_new_tokens=None, base_epochs=None,
                             model_config=None, ollama_model=None, ollama_url=OLLAMA_URL,
                             seed=123, quiet=False, plot=True) -> dict:
    """Book chapter 7 end to end (see the module docstring). `weights=None` is the offline mode
    (`model_config`, default OFFLINE_CONFIG, pretrained for `base_epochs` on the training
    split's text). Unset settings take the book's values with weights, faster ones offline.
    Writes into `out_dir`: loss-plot.png, instruction-data-with-response.json (test entries with
    model_response and per-entry scores), scores.json, model.safetensors (a tinygpt checkpoint,
    LoRA merged) and, with LoRA, lora.safetensors (adapters only). Returns a summary dict."""
    started = time.perf_counter()
    defaults = BOOK_SETTINGS if weights is not None else OFFLINE_SETTINGS
    num_epochs = defaults["num_epochs"] if num_epochs is None else num_epochs
    lr = defaults["lr"] if lr is None else lr
    eval_freq = eval_freq or defaults["eval_freq"]
    eval_iter = eval_iter or defaults["eval_iter"]
    max_new_tokens = max_new_tokens or defaults["max_new_tokens"]
    if base_epochs is None:
        base_epochs = OFFLINE_LORA_BASE_EPOCHS if weights is None and lora_rank else defaults["base_epochs"]
    say = (lambda *a: None) if quiet else print
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = get_gpt2_tokenizer()
    data = load_instruction_data(data_path or asset_path("instruction-data.json"))
    train_data, test_data, val_data = split_instruction_data(data)
    say(f"{len(data)} entries: {len(train_data)} train, {len(test_data)} test, {len(val_data)} val")
    if not train_data or not val_data:
        raise InputError(f"{len(data)} entries are too few to split into train/test/validation")

    if weights is None:
        model, _ = pretrain_small_base(train_data, model_config, base_epochs, batch_size,
                                       OFFLINE_SETTINGS["lr"], seed, quiet)
    else:
        model = load_base_model(weights)
    cfg = dict(model.cfg)
    ctx = cfg["context_length"]
    allowed_max_length = min(allowed_max_length or ctx, ctx)
    if lora_rank:
        manual_seed(seed)
        replace_linear_with_lora(model, lora_rank, lora_alpha if lora_alpha is not None else lora_rank)
    trainable = [p for p in model.parameters() if p.requires_grad]
    say(f"trainable parameters: {sum(p.size for p in trainable):,} of "
        f"{sum(p.size for p in model.parameters()):,}" + (f" (LoRA rank {lora_rank})" if lora_rank else ""))

    # Section 7.3-7.5: loaders (seeded like the book's torch.manual_seed(123)) and training.
    collate = partial(custom_collate_fn, allowed_max_length=allowed_max_length, mask_prompt=mask_prompt)
    datasets = [InstructionDataset(d, tokenizer, with_prompt_lengths=mask_prompt)
                for d in (train_data, val_data)]
    train_loader = DataLoader(datasets[0], batch_size, shuffle=True, drop_last=True,
                              collate_fn=collate, seed=seed)
    val_loader = DataLoader(datasets[1], batch_size, shuffle=False, drop_last=False, collate_fn=collate)
    if len(train_loader) == 0:
        raise InputError(f"{len(train_data)} training entries make no full batch of {batch_size}")
    manual_seed(seed)
    optimizer = AdamW(trainable, lr=lr, weight_decay=weight_decay)
    model.train()
    history = train_model(model, train_loader, val_loader, optimizer, num_epochs, eval_freq,
                          eval_iter, format_input(val_data[0]), tokenizer, schedule=False, quiet=quiet)
    result = {"train_losses": history["train_losses"], "val_losses": history["val_losses"],
              "tokens_seen": history["tokens_seen"], "train_seconds": history["seconds"]}
    if plot and history["train_losses"]:
        n = len(history["train_losses"])
        epochs = np.linspace(0, num_epochs, n).tolist()
        try:
            result["plot"] = plot_losses(epochs, history["tokens_seen"], history["train_losses"],
                                         history["val_losses"], out_dir / "loss-plot.png")
        except ImportError as err:
            say(f"(no plot: {err})")

    # Section 7.7: responses for the test set, saved with the entries; the model saved.
    if lora_rank:
        result["lora"] = save_lora(out_dir / "lora.safetensors", model)
        merge_lora(model)  # one matmul per layer again; same outputs
    gen_start = time.perf_counter()
    responses = generate_responses(model, test_data, tokenizer, max_new_tokens, ctx, quiet=quiet)
    result["generate_seconds"] = time.perf_counter() - gen_start
    scores = {"offline": offline_scores(responses)}
    responses_path = write_json_atomic(out_dir / "instruction-data-with-response.json", responses)
    save_cfg = {**cfg, "tie_weights": bool(getattr(model, "weights_tied", False))}
    result["checkpoint"] = save_checkpoint(out_dir / "model.safetensors", model, config=save_cfg)

    # Section 7.8: the judge, only when asked; a failure keeps everything saved so far.
    if ollama_model:
        try:
            judged = score_with_ollama(responses, ollama_model, ollama_url, quiet=quiet)
        except (ConnectionError, ValueError) as err:
            scores["ollama"] = {"model": ollama_model, "error": str(err)}
            say(f"Ollama scoring failed: {err}")
        else:
            for entry, s in zip(responses, judged):
                entry["ollama_score"] = s
            valid = [s for s in judged if s is not None]
            scores["ollama"] = {"model": ollama_model, "average": (sum(valid) / len(valid)) if valid
                                else None, "scored": len(valid), "unparsed": len(judged) - len(valid)}
            write_json_atomic(responses_path, responses)
    result.update(responses=responses_path, scores=scores, seconds=time.perf_counter() - started)
    write_json_atomic(out_dir / "scores.json", {**scores, "weights": weights or "offline-small",
                                                "lora_rank": lora_rank, "mask_prompt": mask_prompt,
                                                "num_epochs": num_epochs, "seconds": result["seconds"]})
    off = scores["offline"]
    say(f"offline score on {off['num_entries']} test entries: ROUGE-L F1 {off['rouge_l_f1']:.3f}, "
        f"exact match {off['exact_match']:.1%}")
    if scores.get("ollama", {}).get("average") is not None:
        say(f"Ollama ({ollama_model}) average score: {scores['ollama']['average']:.2f}")
    return result
