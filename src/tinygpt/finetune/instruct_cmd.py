"""`tinygpt finetune-instruct`: book chapter 7 (and appendix E's LoRA) from the command line.

    tinygpt finetune-instruct                                   # offline: a small model, minutes
    tinygpt finetune-instruct --weights "gpt2-medium (355M)"    # the book's run
    tinygpt finetune-instruct --weights "gpt2-medium (355M)" --lora-rank 16 --ollama-model llama3
"""
from ..argtypes import non_negative_float, positive_float, positive_int
from ..errors import ServiceError


def add_cli(command) -> None:
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
            from .instruct import run_instruction_finetune
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
