"""Tokenizers of book chapter 2: the simple regex tokenizers (2.3-2.4), GPT-2's byte-pair tokenizer
through tiktoken, offline (2.5), Qwen3's, Llama 3's, Gemma 3's and Olmo 3's (with their chat
templates), and a readable from-scratch byte-pair encoder with training."""
from tinygpt.tokenizer.bpe import BPETokenizer
from tinygpt.tokenizer.gpt2 import (
    ENDOFTEXT,
    GPT2Encoding,
    get_gpt2_tokenizer,
    load_gpt2_ranks,
)
from tinygpt.tokenizer.gemma3 import Gemma3Tokenizer
from tinygpt.tokenizer.llama3 import ChatFormat, Llama3Tokenizer
from tinygpt.tokenizer.olmo3 import Olmo3Tokenizer
from tinygpt.tokenizer.pretokenize import split_words
from tinygpt.tokenizer.qwen3 import Qwen3Tokenizer
from tinygpt.tokenizer.simple import (
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    UnknownTokenError,
    build_vocab,
    simple_split,
)

__all__ = [
    "ENDOFTEXT",
    "BPETokenizer",
    "ChatFormat",
    "Gemma3Tokenizer",
    "GPT2Encoding",
    "Llama3Tokenizer",
    "Olmo3Tokenizer",
    "Qwen3Tokenizer",
    "SimpleTokenizerV1",
    "SimpleTokenizerV2",
    "UnknownTokenError",
    "build_vocab",
    "get_gpt2_tokenizer",
    "load_gpt2_ranks",
    "simple_split",
    "split_words",
]
