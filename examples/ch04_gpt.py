"""Book chapter 4, "Implementing a GPT model from scratch to generate text", on tinygpt.

    python examples/ch04_gpt.py [--max-new-tokens 6] [--seed 123] [--no-cache]

Builds GPT_CONFIG_124M (163M parameters, ~650 MB float32, a few seconds), runs the book's
two-text batch through it (4.6), prints the parameter count and memory size as the book does,
then generates from the untrained model (4.7): gibberish, as in the book, because nothing has
been trained yet (chapter 5). With the default --seed 123 the untrained model has the book's
initial weights (tg.manual_seed matches torch.manual_seed), so it writes the book's words:
"Hello, I am Featureiman Byeswickattribute argue". The 4.6 batch runs in training mode, as in the
book, and tinygpt's dropout masks are its own (not torch's), so only its shape is printed.
Offline: the GPT-2 tokenizer ships with tinygpt. Writes no files.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tinygpt.argtypes import positive_int
from tinygpt import tune_malloc
import tinygpt as tg  # noqa: E402
from tinygpt.model import (  # noqa: E402
    GPT_CONFIG_124M,
    GPTModel,
    count_parameters,
    generate,
    generate_text_simple,
    model_size_mb,
    text_to_token_ids,
    token_ids_to_text,
)
from tinygpt.tokenizer import get_gpt2_tokenizer  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-new-tokens", type=positive_int, default=6)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--prompt", default="Hello, I am")
    parser.add_argument("--no-cache", action="store_true",
                        help="use the book's generate_text_simple instead of the KV-cached generate")
    args = parser.parse_args(argv)
    tune_malloc()  # an application's choice: see tinygpt/core/malloc.py
    tokenizer = get_gpt2_tokenizer()

    # 4.1/4.6: a batch of two texts through the full-size model
    batch = np.concatenate([text_to_token_ids("Every effort moves you", tokenizer),
                            text_to_token_ids("Every day holds a", tokenizer)])  # (2, 4)
    print("Input batch:\n", batch)
    tg.manual_seed(args.seed)
    start = time.perf_counter()
    model = GPTModel(GPT_CONFIG_124M)
    print(f"(built GPT_CONFIG_124M in {time.perf_counter() - start:.1f} s)")
    with tg.no_grad():
        logits = model(batch)                             # (2, 4, 50257)
    print("Output shape:", logits.shape)

    # 4.6: parameter count and size, as the book prints them
    total_params = count_parameters(model)
    print(f"Total number of parameters: {total_params:,}")
    print("Token embedding layer shape:", model.tok_emb.weight.shape)
    print("Output layer shape:", model.out_head.weight.shape)
    print(f"Number of trainable parameters considering weight tying: "
          f"{count_parameters(model, exclude_out_head=True):,}")
    print(f"Total size of the model: {model_size_mb(model):.2f} MB")

    # 4.7: generating text from the untrained model
    encoded = text_to_token_ids(args.prompt, tokenizer)   # (1, n)
    print(f"\nencoded: {encoded[0].tolist()}\nencoded shape: {encoded.shape}")
    model.eval()                                          # disable dropout
    start = time.perf_counter()
    if args.no_cache:
        out = generate_text_simple(model, encoded, args.max_new_tokens,
                                   context_size=GPT_CONFIG_124M["context_length"])
    else:
        out = generate(model, encoded, args.max_new_tokens,
                       context_size=GPT_CONFIG_124M["context_length"], use_cache=True)
    elapsed = time.perf_counter() - start
    print("Output:", out.tolist())
    print("Output length:", out.shape[1])
    print("Decoded text:", token_ids_to_text(out, tokenizer))
    print(f"({args.max_new_tokens} new tokens in {elapsed:.2f} s, "
          f"{'book loop, no cache' if args.no_cache else 'KV cache'})")


if __name__ == "__main__":
    main()
