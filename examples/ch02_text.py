"""Book chapter 2, "Working with text data", end to end on the-verdict (shipped, offline).

The simple word tokenizer (2.3-2.4), GPT-2's byte-pair tokenizer (2.5), sliding-window batches (2.6),
and token + absolute position embeddings (2.7-2.8), printing what the book prints. Writes no files.

    python examples/ch02_text.py
"""
import argparse

from tinygpt import tune_malloc
from tinygpt import arange, manual_seed, nn
from tinygpt.assets import asset_path
from tinygpt.data import create_dataloader_v1
from tinygpt.tokenizer import (
    SimpleTokenizerV2,
    build_vocab,
    get_gpt2_tokenizer,
    simple_split,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    tune_malloc()  # an application's choice: see tinygpt/core/malloc.py
    raw_text = asset_path("the-verdict.txt").read_text(encoding="utf-8")
    print(f"the-verdict: {len(raw_text)} characters")

    # 2.3-2.4: a word-level vocabulary built from the text itself
    vocab = build_vocab(raw_text, ["<|endoftext|>", "<|unk|>"])
    simple = SimpleTokenizerV2(vocab)
    print(f"simple tokenizer: {len(simple_split(raw_text))} tokens, vocabulary {len(vocab) - 2} words "
          f"+ 2 special tokens = {len(vocab)}")
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace."
    print(f"  {simple.decode(simple.encode(text))!r}")

    # 2.5: GPT-2's byte-pair encoding: no unknown words
    tokenizer = get_gpt2_tokenizer()
    enc_text = tokenizer.encode(raw_text)
    print(f"GPT-2 tokenizer: {len(enc_text)} tokens, vocabulary {tokenizer.n_vocab}")

    # 2.6: inputs and next-token targets from a sliding window
    max_length = 4
    dataloader = create_dataloader_v1(raw_text, batch_size=8, max_length=max_length, stride=4, shuffle=False)
    inputs, targets = next(iter(dataloader))  # (8, 4) int64 each
    print(f"{len(dataloader)} batches; first batch\ninputs:\n{inputs}\ntargets:\n{targets}")

    # 2.7-2.8: token embeddings + absolute position embeddings
    manual_seed(123)
    vocab_size, output_dim = tokenizer.n_vocab, 256
    token_embedding_layer = nn.Embedding(vocab_size, output_dim)
    pos_embedding_layer = nn.Embedding(max_length, output_dim)
    token_embeddings = token_embedding_layer(inputs)  # (8, 4, 256)
    pos_embeddings = pos_embedding_layer(arange(max_length))  # (4, 256), broadcast over the batch
    input_embeddings = token_embeddings + pos_embeddings  # (8, 4, 256)
    print(f"token embeddings {tuple(token_embeddings.shape)} + position embeddings {tuple(pos_embeddings.shape)}"
          f" -> input embeddings {tuple(input_embeddings.shape)}")


if __name__ == "__main__":
    main()
