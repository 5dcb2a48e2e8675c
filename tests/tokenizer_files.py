"""Tokenizer files built locally, offline, for the Qwen3 and Llama 3 tokenizer tests and the chat
tests: a small byte-level BPE trained with Hugging Face's `tokenizers` and saved as a
tokenizer.json carrying Qwen3's special tokens after its ranks (as the real file has them), and a
tiktoken ranks file shaped like Llama 3's tokenizer.model (GPT-2's ranks padded to 128,000 ranks,
so the special tokens get the ids the real file gives them)."""
import base64
from pathlib import Path

from tinygpt.assets import asset_path
from tinygpt.tokenizer.qwen3 import QWEN3_SPECIALS

LLAMA3_N_RANKS = 128_000


def training_text() -> str:
    return Path(asset_path("the-verdict.txt")).read_text(encoding="utf-8")


def write_qwen3_tokenizer_json(path, vocab_size: int = 300) -> Path:
    """A byte-level BPE of about `vocab_size` ranks + Qwen3's 16 special tokens, as tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([training_text()], trainer)
    tok.add_special_tokens(list(QWEN3_SPECIALS))
    path = Path(path)
    tok.save(str(path))
    return path


def write_llama3_tokenizer_model(path) -> Path:
    """GPT-2's 50,256 ranks, then distinct filler tokens text never forms (they start with two NUL
    bytes), up to Llama 3's 128,000 ranks, in tiktoken's `base64 rank` lines."""
    from tinygpt.tokenizer import load_gpt2_ranks
    ranks = sorted(load_gpt2_ranks().items(), key=lambda item: item[1])
    tokens = [token for token, _ in ranks]
    tokens += [b"\x00\x00" + i.to_bytes(3, "big") for i in range(LLAMA3_N_RANKS - len(tokens))]
    path = Path(path)
    path.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r for r, t in enumerate(tokens)))
    return path
