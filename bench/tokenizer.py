"""How much slower is the readable BPETokenizer than tiktoken? One line: encode the-verdict (book ch. 2).

Cold = a fresh per-word cache for every repeat (the honest cost of the merge loop); warm = cache filled,
so only the regex split and dictionary look-ups remain. Median of repeats.

    python bench/tokenizer.py [--repeats 21]
"""
import argparse
import statistics
import time

from tinygpt.assets import asset_path
from tinygpt.tokenizer import BPETokenizer, get_gpt2_tokenizer


def median_seconds(fn, repeats: int, setup=lambda: None) -> float:
    times = []
    for _ in range(repeats):
        setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args(argv)

    text = asset_path("the-verdict.txt").read_text(encoding="utf-8")
    tik, bpe = get_gpt2_tokenizer(), BPETokenizer.gpt2()
    assert bpe.encode(text) == tik.encode(text), "BPETokenizer and tiktoken disagree on the-verdict"
    n_tokens = len(tik.encode(text))

    t_tik = median_seconds(lambda: tik.encode(text), args.repeats)
    t_cold = median_seconds(lambda: bpe.encode(text), args.repeats, setup=bpe.clear_cache)
    t_warm = median_seconds(lambda: bpe.encode(text), args.repeats)
    print(f"tokenizer encode the-verdict ({len(text)} chars, {n_tokens} tokens, median of {args.repeats}): "
          f"tiktoken {t_tik * 1e3:.2f} ms | BPETokenizer cold {t_cold * 1e3:.2f} ms ({t_cold / t_tik:.1f}x) "
          f"| warm {t_warm * 1e3:.2f} ms ({t_warm / t_tik:.1f}x)")


if __name__ == "__main__":
    main()
