"""Chat with Qwen3 on the tinygpt engine: its own tokenizer, its chat template, streamed replies.

Offline by default: a tiny random Qwen3 and a small byte-level BPE tokenizer (trained here on the
book's short story, with Qwen3's special tokens) are written in the Hugging Face layout, as the
real checkpoint is, and loaded back. Its weights are random, so its replies are noise: the point
is the machinery, from a message to the chat prompt's token ids to streamed text that stops at
`<|im_end|>`. With `--model Qwen/Qwen3-0.6B` (internet once, about 1.5 GB; the files are cached)
it is the real model, run on your CPU:

    python examples/qwen3_chat.py                                  # offline, tiny random model
    python examples/qwen3_chat.py --model Qwen/Qwen3-0.6B          # the real one
    python examples/qwen3_chat.py --model Qwen/Qwen3-0.6B --thinking -m "Why is the sky blue?"

Messages come from -m/--message (repeatable), else from standard input, one per line (the
offline demo without -m sends one message of its own).
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from tinygpt.argtypes import positive_int
from tinygpt import tune_malloc
import tinygpt as tg
from tinygpt.assets import asset_path
from tinygpt.cli.inference import TextStream
from tinygpt.model import Qwen3Model, for_inference
from tinygpt.model.generate import generate_stream
from tinygpt.tokenizer import Qwen3Tokenizer
from tinygpt.tokenizer.qwen3 import QWEN3_SPECIALS
from tinygpt.weights import download_model, is_repo_id, load_pretrained, save_pretrained_hf

TINY_QWEN3 = {"vocab_size": 400, "context_length": 256, "emb_dim": 64, "n_heads": 4,
              "n_layers": 2, "hidden_dim": 128, "head_dim": 16, "qk_norm": True, "n_kv_groups": 2,
              "rope_base": 1_000_000.0, "tie_weights": False}
DEMO_MESSAGE = "Give me a short introduction to large language models."


def write_tiny_qwen3(folder: Path) -> Path:
    """A random Qwen3 (config.json + model.safetensors) and a tokenizer.json beside it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_QWEN3["vocab_size"] - len(QWEN3_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([Path(asset_path("the-verdict.txt")).read_text(encoding="utf-8")], trainer)
    tok.add_special_tokens(list(QWEN3_SPECIALS))  # after the BPE's ranks, as in Qwen3's file
    tok.save(str(folder / "tokenizer.json"))
    tg.manual_seed(123)
    return save_pretrained_hf(Qwen3Model(TINY_QWEN3), folder)


def model_folder(name: str, scratch: Path) -> Path:
    if name is None:
        print(f"No --model given: a tiny random Qwen3 and tokenizer, written to {scratch}")
        return write_tiny_qwen3(scratch)
    if not Path(name).exists() and is_repo_id(name):
        print(f"{name}: from the cache, or downloaded once from the Hugging Face Hub")
        return download_model(name)
    return Path(name)


def reply(model, tokenizer, message: str, args) -> str:
    ids = np.asarray([tokenizer.encode(message)], dtype=np.int64)  # (1, n): the chat prompt
    window = min(model.cfg["context_length"], ids.shape[1] + args.max_new_tokens)
    out = TextStream(tokenizer)
    for token in generate_stream(model, ids, args.max_new_tokens, window,
                                 temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                 eos_id=tokenizer.eos_token_id):
        out.add(int(token[0, 0]))
    return out.finish()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a Hub name (Qwen/Qwen3-0.6B) or a Hugging Face folder")
    parser.add_argument("-m", "--message", action="append", help="a message (repeatable)")
    parser.add_argument("--thinking", action="store_true", help="let the model think first")
    parser.add_argument("--max-new-tokens", type=positive_int, default=200)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    args = parser.parse_args(argv)
    tune_malloc()  # an application's choice: see tinygpt/core/malloc.py
    with tempfile.TemporaryDirectory() as scratch:
        folder = model_folder(args.model, Path(scratch))
        model = for_inference(load_pretrained(folder)).eval()  # the fast generation layers
        tokenizer = Qwen3Tokenizer(folder / "tokenizer.json", apply_chat_template=True,
                                   add_generation_prompt=True, add_thinking=args.thinking)
        n = sum(p.size for p in model.parameters())
        print(f"{type(model).__name__}: {n:,} parameters, {len(model.trf_blocks)} blocks; "
              f"replies stop at token {tokenizer.eos_token_id} ({tokenizer.decode([tokenizer.eos_token_id])})")
        messages = args.message or ([DEMO_MESSAGE] if args.model is None
                                    else (line.strip() for line in sys.stdin))
        for message in messages:
            if not message:
                continue
            prompt = tokenizer.encode(message)
            print(f"\nyou> {message}\nchat prompt ({len(prompt)} tokens): "
                  f"{tokenizer.decode(prompt)!r}\nmodel> ", end="", flush=True)
            reply(model, tokenizer, message, args)


if __name__ == "__main__":
    main()
