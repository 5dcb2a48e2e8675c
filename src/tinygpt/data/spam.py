"""The SMS Spam Collection (book chapter 6.2-6.3): parsing, the balanced split, `SpamDataset`, and a
download helper for the original UCI archive.

Parsing. The book reads the tab-separated file with `pd.read_csv(path, sep="\\t", header=None,
names=["Label", "Text"])`. Its default quoting folds lines: one message opens a double quote that
never closes, so two following `ham` lines become part of it, giving 5,572 rows (4,825 ham, 747 spam)
from the file's 5,574 lines. Python's `csv.reader(delimiter="\\t")` parses the file the same way, so we
use it and get the book's rows, counts and split without pandas.

The split (book 6.2): keep `RandomState(123).permutation(4825)[:747]` of the ham rows in file order
(what `DataFrame.sample(747, random_state=123)` draws), append all 747 spam rows, shuffle the 1,494 rows
with `RandomState(123).permutation(1494)` (`sample(frac=1, random_state=123)`), and cut 70/10/20 with
`int()` rounding: 1,045 train, 149 validation, 300 test. Ham is label 0, spam label 1.
"""
import csv
import hashlib
import io
import os
import pathlib
import zipfile

import numpy as np
from .text import encode_row, read_text
from ..errors import InputError
from ..files import atomic_write

LABELS = {"ham": 0, "spam": 1}
CLASS_NAMES = ("not spam", "spam")  # what classify_review prints for label 0 and 1
SMS_SPAM_FILE = "SMSSpamCollection.tsv"
SMS_SPAM_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
UCI_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"


# --- reading ------------------------------------------------------------------------------------
def read_sms_spam(path=None):
    """The raw collection (no header, `label<TAB>text` per line) -> list of (label, text) rows, as
    the book's pandas call parses it (5,572 rows for the shipped file). `path` defaults to the copy
    shipped in tinygpt/assets. Labels stay the strings "ham"/"spam"."""
    if path is None:
        from ..assets import asset_path
        path = asset_path(SMS_SPAM_FILE)
    return _parse_tsv(io.StringIO(read_text(path), newline=""), path)


def _records(reader, path):
    """The rows of a csv reader; a row it cannot parse (a field longer than the csv module's
    131,072-character limit, ...) is an InputError naming the file and line."""
    try:
        yield from reader
    except csv.Error as err:
        raise InputError(f"{path}: line {reader.line_num}: {err} (is this a tab-separated or "
                         "CSV file of messages?)") from None


def _parse_tsv(f, path):
    rows = []
    for line_no, row in enumerate(_records(csv.reader(f, delimiter="\t"), path), start=1):
        if not row:
            continue  # pandas skips blank lines
        if len(row) != 2 or row[0] not in LABELS:
            raise InputError(f"{path}: record {line_no} is not 'ham|spam<TAB>text': {row[:2]!r}")
        rows.append((row[0], row[1]))
    if not rows:
        raise InputError(f"{path} holds no messages (empty file)")
    return rows


def read_labeled_csv(path):
    """A CSV with a header naming the columns `Label` and `Text` (the book's train.csv,
    validation.csv, test.csv; other columns are ignored) -> list of (label, text) rows with integer
    labels. Raises ValueError for an empty file, a missing column or a bad label."""
    with io.StringIO(read_text(path), newline="") as f:
        reader = _records(csv.reader(f), path)
        header = next(reader, None)
        if not header:
            raise InputError(f"{path} is empty: expected a header line 'Label,Text' and one row per message")
        missing = [c for c in ("Label", "Text") if c not in header]
        if missing:
            raise InputError(f"{path} has no column {' or '.join(map(repr, missing))}; "
                             f"its header is {header!r} (expected 'Label' and 'Text')")
        li, ti = header.index("Label"), header.index("Text")
        rows = []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) <= max(li, ti):
                raise InputError(f"{path}: row {line_no} has {len(row)} fields, header has {len(header)}")
            rows.append((_label_id(row[li], f"{path}: row {line_no}"), row[ti]))
    if not rows:
        raise InputError(f"{path} has a header but no messages")
    return rows


def read_messages(path):
    """Either format, told apart by the first line: the raw collection (`ham<TAB>...`) or a CSV
    with a `Label,Text` header. -> list of (label id, text)."""
    first = read_text(path).split("\n", 1)[0]  # a byte-order mark is dropped, not part of a label
    if not first.strip():
        raise InputError(f"{path} is empty: expected the raw SMS Spam Collection or a CSV with "
                         "columns Label,Text")
    if first.split("\t", 1)[0] in LABELS and "\t" in first:
        return [(LABELS[label], text) for label, text in read_sms_spam(path)]
    return read_labeled_csv(path)


def _label_id(label, where="label"):
    """"ham"/"spam", 0/1 or "0"/"1" -> 0/1."""
    if isinstance(label, str):
        label = label.strip()
        if label in LABELS:
            return LABELS[label]
    try:
        value = int(label)
    except (TypeError, ValueError):
        value = None
    if value not in (0, 1):
        raise InputError(f"{where}: label {label!r} is not ham/spam or 0/1")
    return value


def write_csv(rows, path):
    """The book's `df.to_csv(path, index=None)`: header `Label,Text`, integer labels, fields
    quoted when needed. Written to a temporary file and renamed (atomic)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["Label", "Text"])
    writer.writerows([(_label_id(label), text) for label, text in rows])
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue().encode("utf-8"))
    return path


# --- the book's balanced split ------------------------------------------------------------------
def balance_and_split(rows, train_frac=0.7, validation_frac=0.1, seed=123, source="the messages"):
    """Book 6.2: undersample ham to the spam count, shuffle, split. `rows` are (label, text) pairs
    with "ham"/"spam" or 0/1 labels, in file order; `source` names them in errors. ->
    (train, validation, test), lists of (label id, text). With the shipped file and the
    defaults: 1045 / 149 / 300."""
    rows = [(_label_id(label), text) for label, text in rows]
    ham = [r for r in rows if r[0] == 0]
    spam = [r for r in rows if r[0] == 1]
    if not spam or len(ham) < len(spam):
        raise InputError(f"{source}: cannot balance {len(ham)} ham and {len(spam)} spam messages; "
                         f"the book's split needs at least one spam message and at least as many "
                         f"ham as spam")
    keep = np.random.RandomState(seed).permutation(len(ham))[:len(spam)]  # DataFrame.sample(n)
    balanced = [ham[i] for i in keep] + spam
    order = np.random.RandomState(seed).permutation(len(balanced))       # sample(frac=1)
    shuffled = [balanced[i] for i in order]
    train_end = int(len(shuffled) * train_frac)
    validation_end = train_end + int(len(shuffled) * validation_frac)
    return shuffled[:train_end], shuffled[train_end:validation_end], shuffled[validation_end:]


def prepare_spam_csvs(out_dir, source=None, seed=123):
    """Write the book's train.csv, validation.csv and test.csv into `out_dir` (from the shipped
    collection unless `source` names another copy). Returns the three paths."""
    if source is None:
        from ..assets import asset_path
        source = asset_path(SMS_SPAM_FILE)
    parts = balance_and_split(read_sms_spam(source), seed=seed, source=source)
    out_dir = pathlib.Path(out_dir)
    return tuple(write_csv(part, out_dir / f"{name}.csv")
                 for name, part in zip(("train", "validation", "test"), parts))


# --- dataset ------------------------------------------------------------------------------------
class SpamDataset:
    """Book 6.3: messages as GPT-2 token ids padded to one length, with their 0/1 labels.

    `csv_or_rows`: a path (the raw collection or a CSV with columns Label,Text) or a list of
    (label, text) pairs. Messages are cut to `max_length` tokens; without it, `max_length` becomes
    the longest message (pass the training set's `max_length` to the validation and test sets, as
    the book does). Shorter messages are padded on the right with `pad_token_id`.
    Items: (token ids (max_length,) int64, label () int64)."""

    def __init__(self, csv_or_rows, tokenizer, max_length=None, pad_token_id=50256):
        source = ""  # how errors name a message: "data.tsv, message 3" or "message 3"
        if isinstance(csv_or_rows, (str, os.PathLike)):
            rows, source = read_messages(csv_or_rows), f"{csv_or_rows}, "
        else:
            rows = [(_label_id(label, f"row {i}"), text) for i, (label, text) in enumerate(csv_or_rows)]
        if not rows:
            raise InputError("SpamDataset got no messages")
        self.labels = np.array([label for label, _ in rows], dtype=np.int64)   # (n,)
        self.texts = [text for _, text in rows]
        encoded = [encode_row(tokenizer, text, f"{source}message {i} ({text[:40]!r})")
                   for i, text in enumerate(self.texts)]
        if max_length is None:
            max_length = max(len(ids) for ids in encoded)
        elif isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
            raise InputError(f"max_length must be a positive int or None, got {max_length!r}")
        self.max_length = int(max_length)
        self.pad_token_id = int(pad_token_id)
        ids = np.full((len(encoded), self.max_length), self.pad_token_id, dtype=np.int64)  # (n, max_length)
        for i, tokens in enumerate(encoded):
            tokens = tokens[:self.max_length]
            ids[i, :len(tokens)] = tokens
        self.encoded_texts = ids

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.encoded_texts[index], self.labels[index]  # (max_length,), ()


# --- download -----------------------------------------------------------------------------------
def download_sms_spam(dest_dir, url=UCI_URL, sha256=SMS_SPAM_SHA256, zip_sha256=None, quiet=False,
                      timeout=60.0):
    """Fetch the UCI zip, extract its `SMSSpamCollection` as `dest_dir/SMSSpamCollection.tsv` (the
    book's name) and return that path. Does nothing when that file is there with the right checksum.

    Verified: the extracted file's sha256 must equal `sha256` (by default that of the collection
    shipped with tinygpt; no checksum of the zip itself is recorded, pass `zip_sha256` to check it
    too). The zip is downloaded by `tinygpt.data.download.download_file` (resumable: an
    interrupted download continues on the next call) and deleted after extraction. On a mismatch
    or a broken archive a ChecksumError (an OSError) is raised and neither the zip nor the file is
    left in `dest_dir`; the file only ever appears complete (written beside it, then renamed).
    An unreachable server raises DownloadError."""
    from .download import ChecksumError, download_file
    dest_dir = pathlib.Path(dest_dir)
    target = dest_dir / SMS_SPAM_FILE
    if target.is_file() and (sha256 is None or _sha256(target.read_bytes()) == sha256):
        return target
    archive = dest_dir / "sms+spam+collection.zip"
    download_file(url, archive, sha256=zip_sha256, progress=not quiet, timeout=timeout)
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if pathlib.PurePosixPath(n).name == "SMSSpamCollection"]
            if not names:
                raise ChecksumError(f"the archive from {url} has no SMSSpamCollection file "
                                    f"(it holds {', '.join(zf.namelist()) or 'nothing'})")
            data = zf.read(names[0])  # read by name: nothing is extracted anywhere else
        actual = _sha256(data)
        if sha256 is not None and actual != sha256:
            raise ChecksumError(f"SMSSpamCollection from {url} has sha256 {actual}, expected "
                                f"{sha256}: the download is corrupt or not the expected collection "
                                "(nothing was saved)")
        with atomic_write(target, "wb") as f:
            f.write(data)
    except zipfile.BadZipFile as err:
        raise ChecksumError(f"{url} did not deliver a valid zip archive ({err}); nothing was saved") from None
    finally:
        archive.unlink(missing_ok=True)
    return target


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
