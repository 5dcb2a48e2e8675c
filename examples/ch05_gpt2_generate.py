"""Book section 5.5: load OpenAI's GPT-2 weights and generate text.

    python examples/ch05_gpt2_generate.py                      # gpt2-small (124M)
    python examples/ch05_gpt2_generate.py --weights gpt2-medium
    python examples/ch05_gpt2_generate.py --weights path/to/hf-dir-or-model.pth

The book's settings: prompt "Every effort moves you", seed 123, top_k 50, temperature 1.5,
25 new tokens. A model name is downloaded once from the Hugging Face Hub into the cache
($TINYGPT_HOME, default ~/.cache/tinygpt); offline without it, this says so and exits 1.
"""
import argparse
import sys
import time

from tinygpt.argtypes import non_negative_float, positive_int
from tinygpt import tune_malloc
import tinygpt
from tinygpt.model import for_inference, generate, text_to_token_ids, token_ids_to_text
from tinygpt.tokenizer import get_gpt2_tokenizer
from tinygpt.weights import (
    GPT2_MODELS,
    DownloadError,
    gpt2_dir,
    gpt2_urls,
    load_gpt2,
    resolve_model_name,
)


def offline_message(name: str, error: Exception) -> str:
    canonical = resolve_model_name(name)
    url = gpt2_urls(canonical)["model.safetensors"]
    return (f"The {canonical} weights are not in the cache yet: they need a one-time download "
            f"(about {GPT2_MODELS[canonical]['approx_mb']:,} MB) from\n  {url}\ninto\n  "
            f"{gpt2_dir(canonical)}\nThe download did not succeed:\n  {error}\n"
            f"Connect to the internet and run this again (or `tinygpt download \"{canonical}\"`), "
            f"or pass --weights with a local Hugging Face directory, .safetensors or .pth file.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="gpt2-small (124M)",
                        help="a GPT-2 name (gpt2-small (124M), 355M, gpt2-large, ...) or a path")
    parser.add_argument("--prompt", default="Every effort moves you")
    parser.add_argument("--max-new-tokens", type=positive_int, default=25)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--top-k", type=positive_int, default=50)
    parser.add_argument("--temperature", type=non_negative_float, default=1.5)
    args = parser.parse_args(argv)
    tune_malloc()  # an application's choice: see tinygpt/core/malloc.py

    start = time.perf_counter()
    try:
        model = load_gpt2(args.weights)
    except DownloadError as e:
        if resolve_model_name(args.weights) is None:
            raise
        print(offline_message(args.weights, e), file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:  # a bad path or file: say what, without a traceback
        print(f"could not load GPT-2 weights from {args.weights!r}: {e}", file=sys.stderr)
        return 1
    print(f"loaded {args.weights} in {time.perf_counter() - start:.1f} s "
          f"({model.cfg['n_layers']} layers, emb {model.cfg['emb_dim']})")

    model = for_inference(model).eval()  # packed Q/K/V and the KV-cache kernel: same tokens, faster
    tokenizer = get_gpt2_tokenizer()
    tinygpt.manual_seed(args.seed)
    token_ids = generate(model, idx=text_to_token_ids(args.prompt, tokenizer),
                         max_new_tokens=args.max_new_tokens,
                         context_size=model.cfg["context_length"],
                         top_k=args.top_k, temperature=args.temperature)
    print("Output text:\n", token_ids_to_text(token_ids, tokenizer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
