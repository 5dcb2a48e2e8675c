"""The fine-tuning commands: `tinygpt finetune-classify` and `tinygpt classify` (book chapter 6),
`tinygpt finetune-instruct` (chapter 7, appendix E's LoRA) and `tinygpt finetune-dpo` (the
chapter-7 DPO bonus). Each parses its arguments and calls tinygpt.finetune, which knows nothing
of the command line.

    tinygpt finetune-classify                                   # offline: a small model, minutes
    tinygpt classify --model runs/ch06 --text "You are a winner ..."
    tinygpt finetune-instruct                                   # offline: a small model, minutes
    tinygpt finetune-instruct --weights "gpt2-medium (355M)"    # the book's run
    tinygpt finetune-instruct --weights "gpt2-medium (355M)" --lora-rank 16 --ollama-model llama3
    tinygpt finetune-dpo --model runs/instruct                  # then DPO, offline settings
    tinygpt finetune-dpo --model runs/ch07-medium --weights "gpt2-medium (355M)"   # the notebook
"""
from ..argtypes import non_negative_float, positive_float, positive_int
from ..errors import ServiceError
from . import command


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
        from ..finetune.classify import run_classification
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
        from ..finetune.classify import classify_review, load_classifier, resolve_classifier_path
        model, state = load_classifier(resolve_classifier_path(args.model))
        tokenizer = get_gpt2_tokenizer()
        class_names = tuple(state["class_names"])  # checked by load_classifier
        width = max(map(len, class_names))
        for text in args.text:  # one line per message: its label, then the message
            label = classify_review(text, model, tokenizer, max_length=state.get("max_length"),
                                    pad_token_id=state.get("pad_token_id", 50256),
                                    class_names=class_names)
            print(f"{label:>{width}}: {text}")
    return run


@command("finetune-instruct", "instruction fine-tuning on the book's data (chapter 7)")
def _finetune_instruct(sub):
    sub.add_argument("--weights", help='GPT-2 to start from: a name such as "gpt2-medium (355M)", '
                     "a local file/directory or a tinygpt checkpoint (default: a small GPT "
                     "trained from scratch, offline, in a few minutes)")
    sub.add_argument("--data", help="JSON or JSON-lines file of instruction/input/output entries "
                     "(default: the book's instruction-data.json)")
    sub.add_argument("--epochs", type=positive_int, help="default 2")
    sub.add_argument("--batch-size", type=positive_int, default=8)
    sub.add_argument("--lr", type=positive_float, help="default 5e-5 with --weights (the book), 2e-3 offline")
    sub.add_argument("--weight-decay", type=non_negative_float, default=0.1)
    sub.add_argument("--lora-rank", type=positive_int, help="train rank-r LoRA adapters instead of all weights (offline, the "
                     "small model is first pretrained for 2 epochs: slower)")
    sub.add_argument("--lora-alpha", type=positive_float, help="LoRA scaling (default: the rank)")
    sub.add_argument("--mask-prompt", action="store_true",
                     help="leave the prompt tokens out of the loss (the book's exercise 7.2)")
    sub.add_argument("--max-new-tokens", type=positive_int, help="default 256 with --weights, 64 offline")
    sub.add_argument("--ollama-model", help="score the responses with this Ollama model "
                     "(e.g. llama3); off unless given")
    sub.add_argument("--ollama-url", default="http://localhost:11434/api/chat")
    sub.add_argument("--seed", type=int, default=123)
    sub.add_argument("--out", default="runs/instruct", help="directory for the outputs")
    sub.add_argument("--quiet", action="store_true", help="no progress bars")

    def run(args):
        from ..finetune.instruct import run_instruction_finetune
        try:
            result = run_instruction_finetune(
                weights=args.weights, data_path=args.data, out_dir=args.out,
                num_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                weight_decay=args.weight_decay, lora_rank=args.lora_rank,
                lora_alpha=args.lora_alpha, mask_prompt=args.mask_prompt,
                max_new_tokens=args.max_new_tokens, ollama_model=args.ollama_model,
                ollama_url=args.ollama_url, seed=args.seed, quiet=args.quiet)
        except OSError as err:
            if type(err).__name__ in ("DownloadError", "ChecksumError"):  # no network, etc.
                raise ServiceError(f"could not get the weights {args.weights!r}: {err}") from None
            raise
        off = result["scores"]["offline"]
        print(f"responses: {result['responses']}")
        print(f"model: {result['checkpoint']}")
        print(f"ROUGE-L F1 {off['rouge_l_f1']:.3f}, exact match {off['exact_match']:.1%} "
              f"on {off['num_entries']} test entries")
        judge = result["scores"].get("ollama")
        if judge and judge.get("error"):
            raise ServiceError(f"Ollama scoring failed (outputs saved): {judge['error']}")
        if judge and judge["average"] is not None:
            print(f"Ollama ({judge['model']}) average score {judge['average']:.2f} "
                  f"({judge['scored']} scored, {judge['unparsed']} answers without a score)")
    return run


@command("finetune-dpo", "preference tuning with DPO after chapter 7 (the book's bonus notebook)")
def _finetune_dpo(sub):
    sub.add_argument("--model", default="runs/ch07", help="the instruction-tuned model: a "
                     "tinygpt checkpoint or the directory of a chapter-7 run (default runs/ch07)")
    sub.add_argument("--weights", help="the GPT-2 weights the chapter-7 model was fine-tuned "
                     'from (e.g. "gpt2-medium (355M)"): selects the notebook\'s settings '
                     "(lr 5e-6, evaluation every 5 steps on 5 batches, 256-token responses)")
    sub.add_argument("--data", help="JSON file of entries with instruction/input/output/chosen/"
                     "rejected (default: the book's instruction-data-with-preference.json)")
    sub.add_argument("--beta", type=positive_float, default=0.1,
                     help="how strongly the policy may move from the reference (default 0.1)")
    sub.add_argument("--epochs", type=positive_int, help="default 1")
    sub.add_argument("--batch-size", type=positive_int, help="default 8")
    sub.add_argument("--lr", type=positive_float, help="default 5e-6 with --weights, 3e-4 offline")
    sub.add_argument("--weight-decay", type=non_negative_float, help="default 0.01")
    sub.add_argument("--lora-rank", type=positive_int, help="train rank-r LoRA adapters on the "
                     "policy instead of all its weights")
    sub.add_argument("--lora-alpha", type=positive_float, help="LoRA scaling (default: the rank)")
    sub.add_argument("--eval-freq", type=positive_int, help="evaluate every N steps")
    sub.add_argument("--eval-iter", type=positive_int, help="batches per evaluation")
    sub.add_argument("--max-new-tokens", type=positive_int, help="length of the shown responses")
    sub.add_argument("--train-entries", type=positive_int,
                     help="train on the first N training entries only (a quick run)")
    sub.add_argument("--seed", type=int, default=123)
    sub.add_argument("--out", default="runs/dpo", help="directory for the outputs")
    sub.add_argument("--quiet", action="store_true", help="only the summary")

    def run(args):
        from ..finetune.dpo_train import run_dpo
        result = run_dpo(model=args.model, book=args.weights is not None, data_path=args.data,
                         out_dir=args.out, num_epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, weight_decay=args.weight_decay, beta=args.beta,
                         lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                         eval_freq=args.eval_freq, eval_iter=args.eval_iter,
                         max_new_tokens=args.max_new_tokens, num_train=args.train_entries,
                         seed=args.seed, quiet=args.quiet)
        print(f"validation DPO loss {result['val_loss']:.4f} (start 0.6931), reward margin "
              f"{result['val_reward_margin']:.4f}")
        print(f"responses: {result['responses']}")
        print(f"model: {result['checkpoint']}")
        if "loss_plot" in result:
            print(f"plots: {result['loss_plot']}, {result['reward_margins_plot']}")
    return run
