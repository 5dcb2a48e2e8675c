"""`tinygpt eval-math`: a model graded on math problems (the reasoning sequel's chapter 3)."""
import sys

from . import command
from ..argtypes import positive_int


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
                                          progress)
        print(f"accuracy {result['accuracy']:.1%} ({result['correct']}/{result['total']}); "
              f"results in {args.out}")
    return run
