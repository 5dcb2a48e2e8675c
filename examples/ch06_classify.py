"""Book chapter 6: fine-tune a GPT into an SMS spam classifier, save it, reload it, classify.

Data: the SMS Spam Collection shipped in tinygpt/assets, balanced to 747 ham + 747 spam and split
1045 / 149 / 300 exactly as the book does (the CSVs are written to --out).

    python examples/ch06_classify.py                               # offline, ~1 min of CPU
    python examples/ch06_classify.py --weights "gpt2-small (124M)"  # the book's run

With --weights (a GPT-2 size name, downloaded once, or a local file/folder) this is the book's
setup: new 2-class head, everything frozen except the last transformer block and final_norm,
AdamW lr 5e-5 and weight decay 0.1, batch 8, 5 epochs (the book reports 95.67% test accuracy).
Offline it starts from a small GPT with random weights (2 blocks, 128-dim, tinygpt's
OFFLINE_CONFIG, embeddings at GPT-2's initialisation) and trains every layer, lr 5e-4, 6 epochs:
about 96% test accuracy, both of the book's section-6.8 messages right, in about a minute of
CPU time (one BLAS thread; the wall time is that much on an idle machine, longer on a busy one).

Writes into --out (default runs/ch06): train.csv, validation.csv, test.csv (the split),
classifier.safetensors (reload it with `tinygpt classify --model runs/ch06 --text "..."`),
loss-plot.png and accuracy-plot.png. Same code path as `tinygpt finetune-classify`.

BLAS threads: the offline model's matrix products are small (960 x 128 rows x columns), and a
second OpenBLAS thread costs more than it saves on them. So this script sets
OPENBLAS_NUM_THREADS (and MKL_NUM_THREADS) to --threads, default 1, unless they are already
set in the environment.
"""
import argparse
import os
import time

# The book's two new messages (section 6.8): spam, then not spam.
TEXT_1 = ("You are a winner you have been specially selected to receive $1000 cash or a $2000 "
          "award.")
TEXT_2 = "Hey, just wanted to check if we're still on for dinner tonight? Let me know!"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help='e.g. "gpt2-small (124M)" or a local path; default: offline')
    parser.add_argument("--epochs", type=int, help="default: 5 with --weights, else 6")
    parser.add_argument("--lr", type=float, help="default: 5e-5 with --weights, else 5e-4")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--trainable", choices=("last", "all", "head"),
                        help="default: last with --weights (the book), all offline")
    parser.add_argument("--out", default="runs/ch06")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads (default 1; an already set OPENBLAS_NUM_THREADS wins)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    # tinygpt.argtypes would import tinygpt, and so NumPy, before --threads is set: checked here
    for flag, value in (("--epochs", args.epochs), ("--lr", args.lr), ("--batch-size", args.batch_size),
                        ("--threads", args.threads)):
        if value is not None and not 0 < value < float("inf"):
            parser.error(f"argument {flag}: must be a positive number, got {value}")
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # read when NumPy is first imported
        os.environ.setdefault(var, str(args.threads))

    from tinygpt import tune_malloc
    tune_malloc()  # an application's choice: see tinygpt/core/malloc.py
    from tinygpt.finetune.classify import classify_review, load_classifier, run_classification
    from tinygpt.tokenizer import get_gpt2_tokenizer

    start = time.perf_counter()
    result = run_classification(weights=args.weights, out_dir=args.out, num_epochs=args.epochs,
                                batch_size=args.batch_size, lr=args.lr, trainable=args.trainable,
                                quiet=args.quiet)
    print(f"Training completed in {result['train_seconds'] / 60:.2f} minutes "
          f"({result['seconds']:.1f} s with data, evaluation and saving)")
    print(f"test accuracy {result['test_accuracy'] * 100:.2f}% (train "
          f"{result['train_accuracy'] * 100:.2f}%, validation {result['val_accuracy'] * 100:.2f}%)")
    print(f"classifier {result['checkpoint']}; plots "
          + ", ".join(str(result[k]) for k in ("loss_plot", "accuracy_plot") if k in result))

    # Reload the saved classifier, as a new program would, and classify the book's two messages.
    model, state = load_classifier(result["checkpoint"])
    tokenizer = get_gpt2_tokenizer()
    for text in (TEXT_1, TEXT_2):
        label = classify_review(text, model, tokenizer, max_length=state["max_length"])
        print(f"{label:>8}: {text}")
    print(f"wall time {time.perf_counter() - start:.1f} s")
    return result


if __name__ == "__main__":
    main()
