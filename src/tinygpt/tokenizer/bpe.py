"""A readable byte-level byte-pair-encoding tokenizer, written from scratch (book ch. 2.5 and its bonus
notebook "Byte Pair Encoding (BPE) tokenizer from scratch").

How GPT-2 turns text into token ids:
1. Special tokens such as `<|endoftext|>` are cut out first and map straight to their ids.
2. The rest is split into words by GPT-2's regex (pretokenize.py); BPE never merges across words.
3. Each word is encoded as UTF-8 bytes, so every string is representable (no unknown token).
4. The bytes are merged pairwise: among all adjacent pairs, the one whose concatenation has the lowest
   rank in the vocabulary is merged, leftmost first on ties, until no adjacent pair is in the vocabulary.
   The rank of a token is its id, so "lowest rank" means "learned earliest".

This is exactly what tiktoken does (its Rust `byte_pair_merge`), only slower; tests check the outputs
are identical for arbitrary text. `train` learns a vocabulary from a text in the same format.
"""
import collections
import itertools
import re

from tinygpt.tokenizer.gpt2 import GPT2_SPECIAL_TOKENS, _gpt2_ranks
from tinygpt.tokenizer.pretokenize import check_ids, check_text, split_words
from ..errors import InputError, InputIndexError, InputTypeError


class BPETokenizer:
    """Byte-level BPE: `ranks` maps token bytes -> id (the lower, the earlier merged); `special_tokens`
    maps strings such as "<|endoftext|>" -> id. The API follows tiktoken's Encoding."""

    def __init__(self, ranks: dict[bytes, int], special_tokens: dict[str, int] | None = None):
        special_tokens = dict(special_tokens or {})
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            # Without every single byte some texts could not be encoded at all.
            raise InputError(f"ranks lack {len(missing)} of the 256 single bytes, e.g. {missing[:5]}")
        self.ranks = dict(ranks)
        self.special_tokens = special_tokens
        self.decoder = {i: b for b, i in self.ranks.items()}
        if len(self.decoder) != len(self.ranks):
            raise InputError("ranks must give every token a distinct id")
        for s, i in special_tokens.items():
            if i in self.decoder:
                raise InputError(f"special token {s!r} reuses id {i} of token {self.decoder[i]!r}")
            self.decoder[i] = s.encode("utf-8")
        self._n_vocab = max(self.decoder) + 1
        self._word_cache: dict[bytes, list[int]] = {}  # word -> ids; text repeats words a lot

    @classmethod
    def gpt2(cls) -> "BPETokenizer":
        """GPT-2's vocabulary from the shipped ranks file (sha256-checked): same ids as tiktoken's "gpt2"."""
        return cls(_gpt2_ranks(), GPT2_SPECIAL_TOKENS)

    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self.special_tokens)

    def clear_cache(self) -> None:
        """Forget the per-word results (e.g. to time the merge loop itself)."""
        self._word_cache.clear()

    # ---- encoding --------------------------------------------------------------------------------

    def bpe(self, word: bytes) -> list[int]:
        """Merge the bytes of one pre-tokenised word into token ids (step 4 above)."""
        if word in self._word_cache:
            return self._word_cache[word]
        if word in self.ranks:
            # A word that is itself a token is taken whole, as tiktoken does. (Merging step by step
            # could in principle end elsewhere; matching tiktoken matters more.)
            ids = [self.ranks[word]]
        else:
            parts = [word[i : i + 1] for i in range(len(word))]
            while len(parts) > 1:
                best_rank, best_i = None, None
                for i in range(len(parts) - 1):
                    rank = self.ranks.get(parts[i] + parts[i + 1])
                    # strict "<": among equal ranks the leftmost pair wins, as in tiktoken
                    if rank is not None and (best_rank is None or rank < best_rank):
                        best_rank, best_i = rank, i
                if best_i is None:
                    break  # no adjacent pair is a token: done
                parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
            ids = [self.ranks[p] for p in parts]
        if len(self._word_cache) >= 200_000:  # bound the memory on huge, varied corpora
            self._word_cache.clear()
        self._word_cache[word] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode `text`, treating special-token strings as ordinary text."""
        check_text(text)
        return self._encode_chunk(text)

    def _encode_chunk(self, text: str) -> list[int]:
        return [i for word in split_words(text) for i in self.bpe(word.encode("utf-8"))]

    def encode(self, text: str, *, allowed_special=frozenset(), disallowed_special="all") -> list[int]:
        """Encode `text` to token ids, like tiktoken's `Encoding.encode`.

        allowed_special: special tokens to encode as their ids: "all" or a set of strings.
        disallowed_special: special tokens whose text is an error ("all" = every special token not
            allowed); special tokens neither allowed nor disallowed are encoded as ordinary text.
        Raises TypeError for bytes, ValueError for surrogates or a disallowed special token.
        """
        check_text(text)
        allowed = self._special_set(allowed_special, "allowed_special")
        if disallowed_special == "all":
            disallowed = self.special_tokens_set - allowed
        else:
            disallowed = self._special_set(disallowed_special, "disallowed_special")
        if disallowed:
            found = _find_first(text, disallowed)
            if found is not None:
                token, index = found
                raise InputError(
                    f"text contains the special token {token!r} at index {index}, which is not allowed. "
                    f"Pass allowed_special={{{token!r}}} to encode it as token {self.special_tokens[token]}, "
                    "or disallowed_special=() to encode it as ordinary text."
                )
        ids: list[int] = []
        start = 0
        while True:
            found = _find_first(text, allowed, start)
            end = len(text) if found is None else found[1]
            ids.extend(self._encode_chunk(text[start:end]))  # the regex runs on each chunk separately
            if found is None:
                return ids
            token, index = found
            ids.append(self.special_tokens[token])
            start = index + len(token)

    def _special_set(self, value, name: str) -> set[str]:
        if value == "all":
            return self.special_tokens_set
        if isinstance(value, str):  # a common slip: allowed_special="<|endoftext|>" instead of a set
            raise InputTypeError(
                f"{name} must be 'all' or a set of strings, got the string {value!r}; use {{{value!r}}}"
            )
        value = set(value)
        unknown = value - self.special_tokens_set
        if unknown:
            raise InputError(
                f"{name} names unknown special tokens {sorted(unknown)}; known: {sorted(self.special_tokens)}"
            )
        return value

    # ---- decoding --------------------------------------------------------------------------------

    def decode_bytes(self, ids) -> bytes:
        ids = check_ids(ids, self.n_vocab, "BPETokenizer.decode")
        try:
            return b"".join(self.decoder[i] for i in ids)
        except KeyError as err:  # ranks whose ids have gaps
            raise InputIndexError(
                f"BPETokenizer.decode: token id {err.args[0]} is not in the vocabulary "
                f"(ids 0..{self.n_vocab - 1})") from None

    def decode(self, ids, errors: str = "replace") -> str:
        """Token ids -> text. A cut inside a multi-byte character gives U+FFFD, like tiktoken."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    # ---- training --------------------------------------------------------------------------------

    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens=("<|endoftext|>",)) -> "BPETokenizer":
        """Learn a byte-level BPE vocabulary of `vocab_size` tokens from `text`.

        Start from the 256 single bytes (id = byte value); count adjacent pairs inside the GPT-2
        pre-tokenised words, weighted by how often each word occurs; merge the most frequent pair into a
        new token (ties: the pair seen first); repeat. Special tokens take the last ids. Stops early when
        no pair occurs twice any more, so the result can be smaller than `vocab_size`.
        """
        check_text(text)
        special_tokens = list(special_tokens)
        if not isinstance(vocab_size, int) or vocab_size < 256 + len(special_tokens):
            raise InputError(
                f"vocab_size must be an int >= 256 + {len(special_tokens)} special tokens, got {vocab_size!r}"
            )
        ranks = {bytes([b]): b for b in range(256)}
        vocab = [bytes([b]) for b in range(256)]  # id -> bytes
        # Each distinct word once, as a tuple of token ids, with its count: merges update them in place.
        # Special tokens are cut out first, as in encode, so they never enter the statistics.
        chunks = re.split("|".join(map(re.escape, special_tokens)), text) if special_tokens else [text]
        words = collections.Counter(tuple(w.encode("utf-8")) for chunk in chunks for w in split_words(chunk))
        while len(vocab) < vocab_size - len(special_tokens):
            pair_counts = collections.Counter()
            for word, count in words.items():
                for pair in itertools.pairwise(word):
                    pair_counts[pair] += count
            if not pair_counts:
                break
            pair, count = max(pair_counts.items(), key=lambda kv: kv[1])  # max keeps the first of ties
            if count < 2:
                break  # merging a pair seen once saves nothing elsewhere
            merged = vocab[pair[0]] + vocab[pair[1]]
            if merged in ranks:
                new_id = ranks[merged]  # already reachable via another pair: reuse the id
            else:
                new_id = ranks[merged] = len(vocab)
                vocab.append(merged)
            words = collections.Counter({_merge(word, pair, new_id): c for word, c in words.items()})
        specials = {s: len(vocab) + k for k, s in enumerate(special_tokens)}
        return cls(ranks, specials)


def _merge(word: tuple, pair: tuple, new_id: int) -> tuple:
    """Replace each non-overlapping occurrence of `pair`, left to right, in `word` by `new_id`."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _find_first(text: str, tokens, start: int = 0):
    """(token, index) of the earliest occurrence of any of `tokens` at or after `start`, else None.
    At one index the longest token wins, so "<|a|>" and "<|a|>x" cannot shadow each other."""
    if not tokens:
        return None
    pattern = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))
    m = pattern.search(text, start)
    return None if m is None else (m.group(), m.start())
