"""`tinygpt finetune-classify` and `tinygpt classify` (book chapter 6). Registered by
tinygpt/finetune/cli.py through `add_cli(command)`; both call tinygpt.finetune.classify."""
from ..argtypes import non_negative_float, positive_float, positive_int


def add_cli(command) -> None:
    """Register the two subcommands with the `command(name, help)` decorator of tinygpt.cli."""

    @command("finetune-classify", "fine-tune a GPT into the SMS spam classifier (book chapter 6)")
    def _finetune_classify(sub):
        sub.add_argument("--weights", help='GPT-2 weights: "gpt2-small (124M)" (or another size '
                         'name) or a local file/folder; default: a small model from random weights, '
                         "offline")
        sub.add_argument("--epochs", type=positive_int, help="default: 5 with --weights (the book), else 6")
        sub.add_argument("--batch-size", type=positive_int, default=8)
        sub.add_argument("--lr", type=positive_float, help="default: 5e-5 with --weights (the book), else 5e-4")
        sub.add_argument("--weight-decay", type=non_negative_float, default=0.1)
        sub.add_argument("--eval-freq", type=positive_int, default=50, help="evaluate the losses every N steps")
        sub.add_argument("--eval-iter", type=positive_int, default=5, help="batches per evaluation")
        sub.add_argument("--trainable", choices=("last", "all", "head"),
                         help="which parameters train: last (the book: last block + final_norm + "
                              "head; default with --weights), all (default offline), head")
        sub.add_argument("--data", help="the SMS Spam Collection file (default: the shipped copy)")
        sub.add_argument("--seed", type=int, default=123)
        sub.add_argument("--out", default="runs/ch06", help="folder for CSVs, classifier and plots")
        sub.add_argument("--quiet", action="store_true", help="no progress bar or messages")

        def run(args):
            from .classify import run_classification
            result = run_classification(
                weights=args.weights, out_dir=args.out, num_epochs=args.epochs,
                batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                eval_freq=args.eval_freq, eval_iter=args.eval_iter, seed=args.seed,
                trainable=args.trainable, data_path=args.data, quiet=args.quiet)
            print(f"test accuracy {result['test_accuracy'] * 100:.2f}% "
                  f"(train {result['train_accuracy'] * 100:.2f}%, "
                  f"validation {result['val_accuracy'] * 100:.2f}%)")
            print(f"classifier: {result['checkpoint']}")
        return run

    @command("classify", "classify messages as spam / not spam with a fine-tuned classifier")
    def _classify(sub):
        sub.add_argument("--model", required=True,
                         help="a classifier written by finetune-classify (file or its --out folder)")
        sub.add_argument("--text", required=True, action="append",
                         help="a message to classify (repeat for several)")

        def run(args):
            from ..tokenizer import get_gpt2_tokenizer
            from .classify import classify_review, load_classifier, resolve_classifier_path
            model, state = load_classifier(resolve_classifier_path(args.model))
            tokenizer = get_gpt2_tokenizer()
            class_names = tuple(state.get("class_names", ("not spam", "spam")))
            width = max(map(len, class_names))
            for text in args.text:  # one line per message: its label, then the message
                label = classify_review(text, model, tokenizer, max_length=state.get("max_length"),
                                        pad_token_id=state.get("pad_token_id", 50256),
                                        class_names=class_names)
                print(f"{label:>{width}}: {text}")
        return run
