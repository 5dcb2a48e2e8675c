"""The GPT-2 byte-pair tokenizer, offline (book ch. 2.5).

The book calls `tiktoken.get_encoding("gpt2")`, which downloads the vocabulary on first use. We build
the same `tiktoken.Encoding` from the ranks file shipped in `tinygpt/assets/gpt2.tiktoken` instead:
tiktoken's registry and download code are never called, so nothing can reach the network. The file's
sha256 is checked on every load, so a truncated or edited copy fails loudly rather than tokenising
differently.
"""
import base64
import functools
import hashlib
import os

import tiktoken

from tinygpt.assets import asset_path
from tinygpt.files import read_bytes
from tinygpt.tokenizer.pretokenize import check_ids, check_text
from ..errors import InputError

GPT2_RANKS_FILE = "gpt2.tiktoken"
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
ENDOFTEXT = "<|endoftext|>"
GPT2_SPECIAL_TOKENS = {ENDOFTEXT: 50256}
GPT2_N_VOCAB = 50257

# tiktoken's own pattern for "gpt2"/"r50k_base": GPT-2's pattern (see pretokenize.py) rewritten with
# possessive quantifiers, which its Rust regex engine runs faster; the split is the same.
TIKTOKEN_GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def load_gpt2_ranks(path: str | os.PathLike | None = None,
                    expected_sha256: str = GPT2_RANKS_SHA256) -> dict[bytes, int]:
    """Read a `.tiktoken` ranks file: one `base64(token bytes) rank` per line -> {token bytes: rank}.

    `path` defaults to the shipped GPT-2 file. Raises ValueError naming the file and both hashes when
    its sha256 is not `expected_sha256`.
    """
    path = asset_path(GPT2_RANKS_FILE) if path is None else path
    data = read_bytes(path, "BPE ranks file")  # a folder, a missing or endless file: one line
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise InputError(
            f"BPE ranks file {os.fspath(path)!r} is corrupted or not the expected file: "
            f"sha256 is {actual}, expected {expected_sha256}"
        )
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.cache
def _gpt2_ranks() -> dict[bytes, int]:
    # One read + hash per process; callers must not mutate the dict (BPETokenizer copies it).
    return load_gpt2_ranks()


class GPT2Encoding(tiktoken.Encoding):
    """tiktoken.Encoding that rejects input which is not text with a clear error.

    tiktoken quietly replaces lone surrogates ("\\ud800", e.g. from bytes decoded with
    errors="surrogateescape") by U+FFFD, so decode(encode(text)) != text; and for `bytes` it fails
    deep inside its regex code. Both are caller bugs, so we raise instead. `decode` of an id outside
    the vocabulary is an InputIndexError naming it (tiktoken raises KeyError or OverflowError).
    Everything else is tiktoken's unchanged behaviour.
    """

    def encode(self, text, *, allowed_special=frozenset(), disallowed_special="all"):
        check_text(text)
        return super().encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)

    def encode_ordinary(self, text):
        check_text(text)
        return super().encode_ordinary(text)

    def decode_bytes(self, tokens):
        return super().decode_bytes(check_ids(tokens, self.n_vocab, "GPT-2 tokenizer decode"))

    def decode(self, tokens, errors="replace"):
        return super().decode(check_ids(tokens, self.n_vocab, "GPT-2 tokenizer decode"), errors=errors)


@functools.cache
def get_gpt2_tokenizer() -> GPT2Encoding:
    """GPT-2's tokenizer (50257 tokens, `<|endoftext|>` = 50256), identical to tiktoken's "gpt2".

    Cached: every call returns the same object. Use it as in the book:
    `tok.encode(text, allowed_special={"<|endoftext|>"})`, `tok.decode(ids)`, `tok.n_vocab`.
    """
    return GPT2Encoding(
        "gpt2",
        pat_str=TIKTOKEN_GPT2_PAT_STR,
        mergeable_ranks=_gpt2_ranks(),
        special_tokens=dict(GPT2_SPECIAL_TOKENS),
        explicit_n_vocab=GPT2_N_VOCAB,
    )
