"""Token shards on disk: a corpus tokenized once (`prepare_data`, `tinygpt prepare-data`) and read
back window by window (`ShardWindows`), never whole, as nanoGPT and llm.c do.

Layout of an output folder:

    plan.json            what is being prepared (inputs, their sizes, the pieces of every shard)
    train_00000.bin ...  token ids, raw little-endian uint16 (uint32 for a vocabulary past 65,536)
    val_00000.bin ...    the held-out validation split, the corpus's last `val_fraction` bytes
    index.json           written last: files, token counts, tokenizer, sha256 of every shard

The token stream is the documents (one per input file, optionally with Project Gutenberg's
header and footer cut off) with `<|endoftext|>` between them, tokenized exactly as the whole text
would be in memory: a document is cut into pieces only before a line break that precedes an
ASCII letter. GPT-2's pre-tokenizer splits there anyway (the whitespace before a letter ends with
a token of its own, and that line break is one), so the pieces' tokens concatenate to the whole's.
A model's own tokenizer (`tokenizer="path/to/tokenizer.json"` or its folder, Hugging Face's
format) is cut only where a letter or digit also comes before that line break (Qwen3's and
Llama 3's pre-tokenizers put punctuation and spaces together with a following line break), and
each cut is checked: the text around it must tokenize the same whole and in two halves, else the
next place is tried (after `CHECKED_CUTS` failures the document stays whole: a tokenizer that
marks the start of a text can never be cut). Its documents are tokenized one by one, its
end-of-text token between them. Memory stays bounded: a worker holds one piece (`PIECE_BYTES` of
text) at a time and appends its tokens to the shard file.

Resuming: shards are written whole or not at all (`files.atomic_write`), so after an interruption
the same command keeps every finished shard and prepares the rest; a folder holding another
plan (other inputs or sizes) is refused."""
import glob
import hashlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from .loader import DataLoader
from ..files import atomic_write
from .shard_tokenizers import cut_keeps_tokens, load_tokenizer, token_dtype, tokenizer_record

FORMAT = "tinygpt-shards-1"
PIECE_BYTES = 1 << 20         # text a worker tokenizes at once (about 250k tokens)
SHARD_BYTES = 64 << 20        # text per shard (some 16M tokens, a 32 MB file)
_CUT = re.compile(rb"\n[A-Za-z]")    # a safe cut falls before this line break
_CUT_AFTER_WORD = re.compile(rb"[A-Za-z0-9]\n[A-Za-z]")   # the same, after a letter or digit
CHECKED_CUTS = 64             # cuts a model's tokenizer may refuse before a document stays whole
_START = re.compile(rb"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG", re.I)
_END = re.compile(rb"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG", re.I)


def find_inputs(inputs) -> list:
    """The text files named by `inputs` (files, folders searched for *.txt, glob patterns), in
    order, each once; an input that names nothing is an InputError."""
    found = []
    for item in inputs:
        item = str(item)
        if Path(item).is_dir():
            paths = sorted(p for p in Path(item).rglob("*.txt") if p.is_file())
        elif Path(item).is_file():
            paths = [Path(item)]
        else:
            paths = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        if not paths:
            raise InputError(f"input {item} is no file, no folder with .txt files and no "
                             "pattern that matches a file")
        found += [p for p in paths if p not in found]
    return found


def gutenberg_body(path) -> tuple:
    """(start, end) byte offsets of a Project Gutenberg book's text between its "*** START OF"
    and "*** END OF" lines; the whole file when it has no such lines. Reads line by line."""
    start, end, pos = 0, os.path.getsize(path), 0
    with open(path, "rb") as f:
        for line in f:
            if _START.match(line) and start == 0:
                start = pos + len(line)
            elif _END.match(line) and start:
                end = pos
                break
            pos += len(line)
    return start, max(start, end)


def _safe_cut(f, pos, end, tokenizer=None) -> int:
    """The first safe cut at or after `pos` (before `end`), else `end`; reads 64 KB at a time.
    With a model's `tokenizer` (not GPT-2's), a cut after a letter or digit that it checks."""
    pattern = _CUT if tokenizer is None or tokenizer.name == "gpt2" else _CUT_AFTER_WORD
    base, refused = pos, 0
    while base + 1 < end and refused < CHECKED_CUTS:
        f.seek(base)
        block = f.read(min(end - base, 1 << 16))
        for match in pattern.finditer(block):
            cut = base + match.start() + match.group().index(b"\n")
            if pattern is _CUT or cut_keeps_tokens(f, cut, tokenizer):
                return cut
            refused += 1
            if refused == CHECKED_CUTS:
                break
        base += max(1, len(block) - 2)
    return end


def _documents(files, strip_gutenberg) -> list:
    docs = []
    for path in files:
        start, end = gutenberg_body(path) if strip_gutenberg else (0, os.path.getsize(path))
        if end > start:
            docs.append((str(path), start, end))
    if not docs:
        raise InputError("the inputs hold no text")
    return docs


def plan_shards(files, strip_gutenberg=False, val_fraction=0.1, shard_bytes=SHARD_BYTES,
                piece_bytes=PIECE_BYTES, tokenizer="gpt2") -> dict:
    """Cut the documents into pieces at safe points, the last `val_fraction` of all bytes into
    the validation split, and group the pieces into shards of about `shard_bytes` each."""
    tok = load_tokenizer(tokenizer)
    if not 0 < val_fraction < 1:
        raise InputError(f"the validation fraction must be between 0 and 1, got {val_fraction}")
    docs = _documents(files, strip_gutenberg)
    val_at = int((1 - val_fraction) * sum(end - start for _, start, end in docs))
    pieces, seen = [], 0   # [path, start, end, eot_after, split]
    for d, (path, start, end) in enumerate(docs):
        split_at = end if seen + end - start <= val_at else start   # all train, or all val
        with open(path, "rb") as f:
            if seen <= val_at < seen + end - start:   # the split falls in this document
                split_at = _safe_cut(f, start + val_at - seen, end, tok)
            for lo, hi, split in ((start, split_at, "train"), (split_at, end, "val")):
                while lo < hi:
                    cut = _safe_cut(f, lo + piece_bytes, hi, tok) if hi - lo > piece_bytes else hi
                    pieces.append([path, lo, cut, False, split])
                    lo = cut
        pieces[-1][3] = d + 1 < len(docs)
        seen += end - start
    if all(p[4] == "train" for p in pieces):
        raise InputError("the corpus is too small to hold out a validation split (it has no "
                         "line break where it could be cut): give more text")
    shards = {"train": [], "val": []}
    for piece in pieces:
        group = shards[piece[4]]
        if not group or sum(p[2] - p[1] for p in group[-1]) + piece[2] - piece[1] > shard_bytes:
            group.append([])
        group[-1].append(piece[:4])
    names = {f"{split}_{i:05d}.bin": group for split in shards for i, group in enumerate(shards[split])}
    sizes = {str(p): [os.path.getsize(p), os.stat(p).st_mtime_ns] for p in files}
    return {"format": FORMAT, "tokenizer": tokenizer_record(tok),
            "strip_gutenberg": bool(strip_gutenberg), "val_fraction": val_fraction,
            "files": sizes, "shards": names}


def _piece_text(path, start, end) -> str:
    with open(path, "rb") as f:
        f.seek(start)
        raw = f.read(end - start)
    if start == 0 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"input {path} is not UTF-8 text: byte {start + e.start} is "
                         f"{raw[e.start:e.start + 1]!r} ({e.reason}); save it as UTF-8") from None


def write_shard(out_dir, name, pieces, tokenizer="gpt2") -> tuple:
    """Tokenize `pieces` into the shard file `name`, piece by piece -> (name, tokens, sha256)."""
    tok, digest, count = load_tokenizer(tokenizer), hashlib.sha256(), 0
    dtype = np.dtype(token_dtype(tok.n_vocab)).newbyteorder("<")
    with atomic_write(Path(out_dir) / name, "wb") as f:
        for path, start, end, eot_after in pieces:
            ids = tok.encode(_piece_text(path, start, end))
            if eot_after:
                ids.append(tok.eot_id)
            data = np.asarray(ids, dtype=dtype).tobytes()
            f.write(data)
            digest.update(data)
            count += len(ids)
    return name, count, digest.hexdigest()


def _file_digest(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def prepare_data(inputs, out_dir, strip_gutenberg=False, val_fraction=0.1, jobs=None,
                 shard_bytes=SHARD_BYTES, piece_bytes=PIECE_BYTES, progress=True,
                 tokenizer="gpt2") -> dict:
    """Tokenize `inputs` into shards in `out_dir` (see the module docstring), `jobs` processes
    at once (default: the CPUs), with GPT-2's tokenizer or a model's (`tokenizer`: its
    tokenizer.json or the folder holding it); returns the index, also written to
    `out_dir`/index.json."""
    out = Path(out_dir)
    files = find_inputs(inputs)
    tok = load_tokenizer(None if tokenizer is None else str(tokenizer))
    plan = plan_shards(files, strip_gutenberg, val_fraction, shard_bytes, piece_bytes,
                       None if tokenizer is None else str(tokenizer))
    _check_plan(out, plan)
    done = {name: None for name in plan["shards"] if (out / name).is_file()}
    spec = "gpt2" if tok.name == "gpt2" else tok.name
    todo = [(str(out), name, pieces, spec) for name, pieces in plan["shards"].items()
            if name not in done]
    if done and progress:
        print(f"resuming: {len(done)} of {len(plan['shards'])} shards are done")
    results = dict(_run_jobs(todo, jobs, progress))
    dtype = token_dtype(tok.n_vocab)
    for name in done:
        results[name] = (os.path.getsize(out / name) // np.dtype(dtype).itemsize,
                         _file_digest(out / name))
    index = {**{k: plan[k] for k in ("format", "tokenizer", "strip_gutenberg", "val_fraction")},
             "dtype": dtype, "vocab_size": tok.n_vocab, "eot_id": tok.eot_id,
             "files": [{"path": p, "bytes": size} for p, (size, _) in plan["files"].items()]}
    for split in ("train", "val"):
        names = sorted(n for n in plan["shards"] if n.startswith(split + "_"))
        index[split] = [{"name": n, "tokens": results[n][0], "sha256": results[n][1]} for n in names]
        index[f"{split}_tokens"] = sum(results[n][0] for n in names)
    with atomic_write(out / "index.json", "w", encoding="utf-8") as f:
        json.dump(index, f, indent=1)
    return index


def _check_plan(out: Path, plan: dict) -> None:
    """Write `plan`, or check it equals the one of an interrupted preparation in `out`."""
    plan_file = out / "plan.json"
    if plan_file.is_file():
        try:
            old = json.loads(plan_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            old = None
        if old != json.loads(json.dumps(plan)):
            raise InputError(f"{out} holds a preparation of other inputs or options: give another "
                             "--out folder, or delete that one to start over")
        return
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty and holds no tinygpt preparation: give a new folder")
    with atomic_write(plan_file, "w", encoding="utf-8") as f:
        json.dump(plan, f)


def _run_jobs(todo, jobs, progress):
    """Yield (name, (tokens, sha256)) for each job, over `jobs` processes, with a tokens/s bar."""
    from tqdm import tqdm
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo) or 1))
    total = sum(end - start for _, _, pieces, _ in todo for _, start, end, _ in pieces)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=not progress)
    tokens, started = 0, time.perf_counter()
    pool = None
    if jobs > 1:   # (a worker that dies breaks the pool with an error, where Pool would hang)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
        results = (f.result() for f in as_completed([pool.submit(write_shard, *job) for job in todo]))
    else:
        results = (write_shard(*job) for job in todo)
    sizes = {name: sum(e - s for _, s, e, _ in pieces) for _, name, pieces, _ in todo}
    try:
        for name, count, digest in results:
            tokens += count
            bar.update(sizes[name])
            bar.set_postfix_str(f"{tokens / max(time.perf_counter() - started, 1e-9):,.0f} tokens/s")
            yield name, (count, digest)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class ShardWindows:
    """The windows of one split of a prepared folder, as `GPTDatasetV1` cuts a text (stride =
    `max_length`): window i is the stream's tokens [i*stride, i*stride + max_length] (input and
    one-shifted target), read from the shard files when asked for, across shard ends.

    Each window is read with `os.pread`, not through a memory map: a mapped file's pages count
    as the process's resident memory, and Linux maps whole page-cache folios (up to megabytes)
    around every window read, so the map of a big corpus fills up; read, only the window is held."""

    def __init__(self, data_dir, split="train", max_length=256, stride=None):
        self.index = read_index(data_dir)
        self.dtype = np.dtype(self.index["dtype"]).newbyteorder("<")
        self.max_length, self.stride = int(max_length), int(stride or max_length)
        entries = [e for e in self.index[split] if e["tokens"]]
        self.paths = [str(Path(data_dir) / e["name"]) for e in entries]
        self.ends = np.cumsum([e["tokens"] for e in entries], dtype=np.int64)
        n = int(self.ends[-1]) if len(self.ends) else 0
        self.num_tokens = n
        self.length = max(0, -(-(n - self.max_length) // self.stride))  # the book's range

    def __len__(self):
        return self.length

    def tokens(self, start, count) -> np.ndarray:
        """(count,) int64: the stream's tokens [start, start + count)."""
        out, pos, size = np.empty(count, np.int64), 0, self.dtype.itemsize
        k = int(np.searchsorted(self.ends, start, side="right"))
        while pos < count:
            first = start + pos - (int(self.ends[k - 1]) if k else 0)
            n = min(count - pos, int(self.ends[k]) - start - pos)
            fd = os.open(self.paths[k], os.O_RDONLY)
            try:
                raw = os.pread(fd, size * n, size * first)
            finally:
                os.close(fd)
            if len(raw) != size * n:
                raise InputError(f"shard {self.paths[k]} is shorter than its index records")
            out[pos:pos + n] = np.frombuffer(raw, self.dtype)
            pos, k = pos + n, k + 1
        return out

    def __getitem__(self, idx):
        if not 0 <= idx < self.length:
            raise InputError(f"window {idx} out of range for {self.length} windows")
        ids = self.tokens(int(idx) * self.stride, self.max_length + 1)
        return ids[:-1], ids[1:]   # (max_length,), (max_length,)


def read_index(data_dir) -> dict:
    """The index.json of a prepared folder, checked against the shard files beside it."""
    path = Path(data_dir) / "index.json"
    if not path.is_file():
        raise InputError(f"{data_dir} has no index.json: prepare it with `tinygpt prepare-data "
                         f"FILES --out {data_dir}` (or let an interrupted preparation finish)")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not a tinygpt index: {err}") from None
    if (not isinstance(index, dict) or index.get("format") != FORMAT
            or index.get("dtype") not in ("uint16", "uint32")):
        raise InputError(f"{path} is not a {FORMAT} index of uint16 or uint32 shards")
    itemsize = np.dtype(index["dtype"]).itemsize
    for entry in index["train"] + index["val"]:
        shard = Path(data_dir) / entry["name"]
        if not shard.is_file() or os.path.getsize(shard) != itemsize * entry["tokens"]:
            raise InputError(f"shard {shard} is missing or not the {entry['tokens']} tokens "
                             "index.json records: prepare the folder again")
    return index


class ShardLoader(DataLoader):
    """DataLoader over `ShardWindows`: the same batches, in the same seeded order, as the
    DataLoader of a text's windows, with the order of an epoch kept once as int32 (4 bytes a
    window, the one thing that grows with the corpus: 16 MB for 4G tokens at context 1024)."""

    _cached = (None, None)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle or len(self.dataset) >= 2**31:
            return super().order(epoch)
        if self._cached[0] != (self.seed, epoch):
            self._cached = (None, None)   # free the old order before drawing the new one
            order = np.arange(len(self.dataset), dtype=np.int32)
            np.random.default_rng([self.seed, epoch]).shuffle(order)   # = permutation(n)
            self._cached = ((self.seed, epoch), order)
        return self._cached[1]
