"""The tokenizers `tinygpt prepare-data` can write shards with (data/shards.py): GPT-2's, or a
model's own from its Hugging Face tokenizer.json, and the checks that make cutting a document
into pieces safe for the latter."""
import functools
import hashlib
from pathlib import Path

from ..errors import InputError
from ..tokenizer import ENDOFTEXT, get_gpt2_tokenizer

EOT_ID = 50256   # GPT-2's <|endoftext|>
EOT_NAMES = ("<|endoftext|>", "<|end_of_text|>", "<eos>", "</s>")   # tried in this order


def token_dtype(n_vocab: int) -> str:
    """The shard's id type: uint16 when every id fits, else uint32."""
    return "uint16" if n_vocab <= 1 << 16 else "uint32"


def cut_keeps_tokens(f, cut, tokenizer, span=256) -> bool:
    """Whether the text around `cut` tokenizes the same whole as in its two halves."""
    start = max(0, cut - span)
    f.seek(start)
    raw = f.read(cut + span - start)
    left = raw[:cut - start].decode("utf-8", "ignore")   # (a character cut at the edges drops)
    right = raw[cut - start:].decode("utf-8", "ignore")
    return tokenizer.encode(left + right) == tokenizer.encode(left) + tokenizer.encode(right)


class HFTokenizerFile:
    """A model's own tokenizer, read from a Hugging Face tokenizer.json (or the folder holding
    one) with the `tokenizers` library: plain ids of a text, the vocabulary size, and the
    end-of-text token put between documents (the first of EOT_NAMES it has)."""

    def __init__(self, path):
        from ..tokenizer.qwen3 import load_hf_tokenizer
        path = Path(path)
        self.path = path / "tokenizer.json" if path.is_dir() else path
        self._tok = load_hf_tokenizer(self.path)
        self.name = str(self.path)
        self.n_vocab = self._tok.get_vocab_size(with_added_tokens=True)
        ids = [self._tok.token_to_id(t) for t in EOT_NAMES]
        self.eot_id = next((i for i in ids if i is not None), None)
        if self.eot_id is None:
            raise InputError(f"tokenizer {self.path} has none of the end-of-text tokens "
                             f"{', '.join(EOT_NAMES)} to put between documents")

    def encode(self, text: str) -> list:
        return self._tok.encode(text, add_special_tokens=False).ids


class GPT2Tokens:
    """GPT-2's tokenizer as prepare-data uses it: `<|endoftext|>` in the text is that token."""
    name, n_vocab, eot_id = "gpt2", 50257, EOT_ID

    def encode(self, text: str) -> list:
        return get_gpt2_tokenizer().encode(text, allowed_special={ENDOFTEXT})


@functools.lru_cache(maxsize=4)
def load_tokenizer(spec="gpt2"):
    """"gpt2" (the default), or a model's tokenizer.json or the folder holding it."""
    return GPT2Tokens() if spec in (None, "gpt2") else HFTokenizerFile(spec)


def tokenizer_record(tokenizer):
    """What a plan and an index say about the tokenizer: "gpt2", or the file and its digest."""
    if tokenizer.name == "gpt2":
        return "gpt2"
    return {"file": tokenizer.name,
            "sha256": hashlib.sha256(tokenizer.path.read_bytes()).hexdigest()}
