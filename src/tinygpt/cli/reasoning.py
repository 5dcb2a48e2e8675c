"""`tinygpt eval-math` (a model graded on math problems, the reasoning sequel's chapter 3) and
`tinygpt finetune-grpo` (reinforcement learning with verifiable rewards, chapters 6-7)."""
import sys

from . import command
from ..argtypes import non_negative_float, positive_float, positive_int


@command("eval-math", "grade a model's answers to math problems (MATH-500 by default): the "
                      "last \\boxed{} of each answer, compared with SymPy")
def _eval_math(sub):
    sub.description += (". One JSON line per problem goes to --out as it is graded; run the "
                        "same command again to resume (problems already in --out are skipped).")
    sub.add_argument("--model", required=True, help="a Qwen3/Llama 3 Hugging Face folder or Hub "
                     "name (Qwen/Qwen3-0.6B-Base), a tinygpt checkpoint or GPT-2 weights")
    sub.add_argument("--data", help="a JSON list of objects with 'problem' and 'answer' "
                     "(default: the shipped MATH-500 test set)")
    sub.add_argument("--n", type=positive_int, help="grade only the first N problems")
    sub.add_argument("--thinking", action="store_true", help="Qwen3: the chat template with "
                     "thinking on (the reasoning model); without it the plain prompt (a base model)")
    sub.add_argument("--max-new-tokens", type=positive_int, default=512)
    sub.add_argument("--out", default="math-results.jsonl", help="the JSON lines file (appended to)")
    sub.add_argument("--batch-size", type=positive_int, default=1, help="problems generated "
                     "together over one KV cache (Qwen3/Llama 3; same answers, faster; GPT-2 "
                     "models run one at a time)")

    def run(args):
        from tqdm import tqdm
        from ..reasoning import load_math500_test, load_math_problems
        from ..reasoning.evaluate import evaluate_math_stream, read_results
        from .models import load_text_model
        problems = load_math_problems(args.data) if args.data else load_math500_test()
        problems = problems[:args.n]
        done = read_results(args.out)  # a bad --out is refused before the model loads
        text_model = load_text_model(args.model, chat=args.thinking, thinking=args.thinking)
        start = sum(p["id"] in done for p in problems)
        bar = tqdm(total=len(problems), initial=start, desc="eval-math", file=sys.stderr,
                   dynamic_ncols=True)

        def progress(record, finished, correct, total):
            bar.update(1)
            bar.set_postfix_str(f"accuracy {correct}/{finished} = {correct / finished:.1%}")
        with bar:
            result = evaluate_math_stream(text_model, problems, args.out, args.max_new_tokens,
                                          progress, args.batch_size)
        print(f"accuracy {result['accuracy']:.1%} ({result['correct']}/{result['total']}); "
              f"results in {args.out}")
    return run


@command("finetune-grpo", "reinforcement learning with verifiable rewards (GRPO, the reasoning "
                          "sequel's chapters 6-7) on math problems")
def _finetune_grpo(sub):
    sub.description += (". Each step samples a group of answers to one problem, rewards the "
                        "correct \\boxed{} ones and moves the model towards them. Writes "
                        "grpo-metrics.csv, grpo-metrics.png, a resumable checkpoint and the "
                        "trained model (a Hugging Face folder for Qwen3/Llama 3) into --out.")
    sub.add_argument("--model", required=True, help="a Qwen3/Llama 3 Hugging Face folder or Hub "
                     "name (Qwen/Qwen3-0.6B-Base), a tinygpt checkpoint or GPT-2 weights")
    sub.add_argument("--data", help="a JSON list of objects with 'problem' and 'answer' "
                     "(default: the shipped MATH-500 test set)")
    sub.add_argument("--steps", type=positive_int, help="default: one pass over --data")
    sub.add_argument("--rollouts", type=positive_int, default=4, help="answers per problem (>= 2)")
    sub.add_argument("--max-new-tokens", type=positive_int, default=256)
    sub.add_argument("--temperature", type=positive_float, default=0.8)
    sub.add_argument("--top-p", type=positive_float, default=0.9)
    sub.add_argument("--lr", type=positive_float, default=1e-5)
    sub.add_argument("--clip-eps", type=positive_float, help="chapter 7's clipped policy ratio "
                     "against the rollout policy (e.g. 0.2); default: chapter 6's plain loss")
    sub.add_argument("--inner-epochs", type=positive_int, default=1)
    sub.add_argument("--kl-coeff", type=non_negative_float, default=0.0,
                     help="weight of the KL term to a frozen copy of the starting model")
    sub.add_argument("--thinking", action="store_true", help="Qwen3: the chat template with "
                     "thinking on; rewards the <think></think> format too (--format-reward)")
    sub.add_argument("--format-reward", action="store_true")
    sub.add_argument("--lora-rank", type=positive_int, help="train rank-r LoRA adapters only")
    sub.add_argument("--lora-alpha", type=positive_float, help="LoRA scaling (default: the rank)")
    sub.add_argument("--skip-zero-advantage-updates", action="store_true", help="no backward "
                     "and no optimizer step for a group whose rewards are all equal (chapter 7)")
    sub.add_argument("--eval-every", type=positive_int, help="every K steps, the greedy "
                     "accuracy on held-out problems goes into the metrics' eval_acc column")
    sub.add_argument("--eval-n", type=positive_int, default=50, help="how many held-out "
                     "problems: the last N of --eval-data (default MATH-500) that training "
                     "never sees")
    sub.add_argument("--eval-data", help="a JSON list of objects with 'problem' and 'answer' "
                     "to evaluate on (default: the shipped MATH-500 test set)")
    sub.add_argument("--eval-batch-size", type=positive_int, default=8,
                     help="held-out problems answered together (Qwen3/Llama 3)")
    sub.add_argument("--checkpoint-every", type=positive_int, default=50)
    sub.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    sub.add_argument("--seed", type=int, default=123)
    sub.add_argument("--out", default="runs/grpo")

    def run(args):
        import pathlib
        from ..reasoning import load_math500_test, load_math_problems
        from ..reasoning.grpo_train import METRICS, held_out, plot_grpo_metrics, train_rlvr_grpo
        from .models import load_text_model
        problems = load_math_problems(args.data) if args.data else load_math500_test()
        eval_data = None
        if args.eval_every:
            pool = load_math_problems(args.eval_data) if args.eval_data else load_math500_test()
            eval_data = held_out(pool, problems, args.steps or len(problems), args.eval_n)
        text_model = load_text_model(args.model, chat=args.thinking, thinking=args.thinking)
        model = text_model.model
        if args.lora_rank:
            from ..finetune.lora import replace_linear_with_lora
            replace_linear_with_lora(model, args.lora_rank, args.lora_alpha or args.lora_rank)
        tokenizer = _PromptTokenizer(text_model)
        out = pathlib.Path(args.out)
        train_rlvr_grpo(model, tokenizer, problems, out, steps=args.steps,
                        num_rollouts=args.rollouts, max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature, top_p=args.top_p, lr=args.lr,
                        clip_eps=args.clip_eps, inner_epochs=args.inner_epochs,
                        kl_coeff=args.kl_coeff, format_reward=args.format_reward or args.thinking,
                        checkpoint_every=args.checkpoint_every, resume=args.resume,
                        seed=args.seed,
                        skip_zero_advantage_updates=args.skip_zero_advantage_updates,
                        eval_data=eval_data, eval_every=args.eval_every or 0,
                        eval_batch_size=args.eval_batch_size)
        plot = plot_grpo_metrics(out / METRICS, out / "grpo-metrics.png")
        print(f"metrics: {out / METRICS}; plot: {plot}; model: {_save(model, args.model, out)}")
    return run


class _PromptTokenizer:
    """A TextModel as the tokenizer GRPO samples with: its prompt format, its first end token."""

    def __init__(self, text_model):
        self.encode, self.decode = text_model.prompt_ids, text_model.tokenizer.decode
        self.eos_token_id = text_model.stop_ids[0]


def _save(model, source, out):
    """The trained model in --out: a Hugging Face folder (with the source's tokenizer files) for
    Qwen3/Llama 3, a tinygpt checkpoint for GPT models."""
    import pathlib
    import shutil
    from ..finetune.lora import lora_modules, merge_lora
    if any(True for _ in lora_modules(model)):
        merge_lora(model)
    if hasattr(model, "cfg") and type(model).__name__ in ("Qwen3Model", "Llama3Model"):
        from ..weights import save_pretrained_hf
        from .models import _hf_folder
        save_pretrained_hf(model, out / "model")
        for name in ("tokenizer.json", "tokenizer.model", "original/tokenizer.model"):
            src = _hf_folder(source) / name
            if src.is_file():
                (out / "model" / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, out / "model" / name)
        return out / "model"
    from ..train.checkpoint import save_checkpoint
    return save_checkpoint(pathlib.Path(out) / "model.safetensors", model, config=model.cfg)
