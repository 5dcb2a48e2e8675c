"""`tinygpt finetune-dpo`: preference tuning with DPO (the book's chapter-7 bonus) from the command
line, starting from the model a chapter-7 run saved.

    tinygpt finetune-instruct --out runs/ch07                 # offline chapter 7 first
    tinygpt finetune-dpo --model runs/ch07                    # then DPO, offline settings
    tinygpt finetune-dpo --model runs/ch07-medium --weights "gpt2-medium (355M)"   # the notebook
    tinygpt finetune-dpo --model runs/ch07 --lora-rank 8 --beta 0.2
"""
from ..argtypes import non_negative_float, positive_float, positive_int


def add_cli(command) -> None:
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
            from .dpo_train import run_dpo
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
