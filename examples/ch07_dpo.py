"""The book's chapter-7 bonus: preference tuning with DPO (`dpo-from-scratch.ipynb`).

It starts from the instruction-tuned model that examples/ch07_instruct.py writes (running that
first, offline, when the checkpoint is missing), keeps a frozen copy of it as the reference,
and trains the policy for one epoch on the 935 training entries of the preference data so that
it prefers the politer response of each pair. It prints an evaluation line every few steps
(losses and reward margins, chosen minus rejected reward), the reference's and the policy's
responses to three test entries, and the final validation loss and reward margin; it writes
the loss and reward-margin plots, the responses and the policy into --out (default runs/dpo).

Offline by default: the small chapter-7 model, lr 3e-4, an evaluation every 20 steps on 2
batches; it takes a few minutes on 2 CPU cores (plus chapter 7's few when it runs first). The loss
starts at ln 2 = 0.6931 with margins 0 (policy = reference) and should end below it with a
positive validation margin. The small chapter-7 model is far too small to follow instructions,
so its responses, before and after DPO, do not answer them, politely or not: what the offline
run shows is the data format, the loss and the reward-margin curves. A model whose responses
show the preference starts from GPT-2 medium (below), a long CPU run.

With GPT-2 weights it is the notebook's setup (gpt2-medium, AdamW lr 5e-6, weight decay 0.01,
beta 0.1, batch size 8, 1 epoch, evaluation every 5 steps on 5 batches):

    python examples/ch07_instruct.py --weights "gpt2-medium (355M)" --out runs/ch07-medium
    python examples/ch07_dpo.py --weights "gpt2-medium (355M)" --model runs/ch07-medium
"""
import argparse
import importlib.util
import pathlib
import time

from tinygpt import tune_malloc
from tinygpt.argtypes import positive_float, positive_int
from tinygpt.finetune.dpo_train import run_dpo

# printed at the end of an offline run, beside the results it qualifies
OFFLINE_EXPECTATIONS = """\
What to expect offline: the small chapter-7 model is far too small to follow instructions, so
its responses, before and after DPO (dpo-responses.json), do not answer them, politely or not.
What the run shows is the preference data's format, the DPO loss falling below ln 2 and the
reward margin rising above 0 (the two plots). For responses that show the preference, start
from GPT-2 medium (a long CPU run):
  python examples/ch07_instruct.py --weights "gpt2-medium (355M)" --out runs/ch07-medium
  python examples/ch07_dpo.py --weights "gpt2-medium (355M)" --model runs/ch07-medium"""


def ensure_instruction_model(model_dir, weights) -> None:
    """Run examples/ch07_instruct.py into `model_dir` when it holds no model.safetensors."""
    if (pathlib.Path(model_dir) / "model.safetensors").is_file() or pathlib.Path(model_dir).is_file():
        return
    print(f"no instruction-tuned model in {model_dir}: running examples/ch07_instruct.py first"
          + (f" with {weights}" if weights else " (offline, a few minutes)"))
    spec = importlib.util.spec_from_file_location("ch07_instruct",
                                                  pathlib.Path(__file__).with_name("ch07_instruct.py"))
    ch07_instruct = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ch07_instruct)
    ch07_instruct.main(["--out", str(model_dir), "--quiet"] + (["--weights", weights] if weights else []))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/ch07", help="the chapter-7 run directory (or "
                        "checkpoint) to start from")
    parser.add_argument("--weights", help='the GPT-2 weights chapter 7 started from, e.g. '
                        '"gpt2-medium (355M)": the notebook\'s settings')
    parser.add_argument("--beta", type=positive_float, default=0.1)
    parser.add_argument("--lora-rank", type=positive_int)
    parser.add_argument("--out", default="runs/dpo")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    tune_malloc()  # an application's choice: see tinygpt/core/malloc.py

    start = time.perf_counter()
    ensure_instruction_model(args.model, args.weights)
    dpo_start = time.perf_counter()
    result = run_dpo(model=args.model, book=args.weights is not None, out_dir=args.out,
                     beta=args.beta, lora_rank=args.lora_rank, quiet=args.quiet)
    end = time.perf_counter()
    tracking = result["tracking"]
    print(f"final validation: DPO loss {result['val_loss']:.4f} (start ln 2 = 0.6931), "
          f"reward margin {result['val_reward_margin']:.4f} (start 0)")
    print(f"last evaluation: train loss {tracking['train_losses'][-1]:.3f}, "
          f"val loss {tracking['val_losses'][-1]:.3f}")
    print(f"wall time {end - start:.1f} s (DPO {end - dpo_start:.1f} s, of which training "
          f"{result['train_seconds']:.1f} s)")
    print(f"responses {result['responses']}, model {result['checkpoint']}"
          + (f", plots {result['loss_plot']} and {result['reward_margins_plot']}"
             if "loss_plot" in result else ""))
    if args.weights is None:
        print(OFFLINE_EXPECTATIONS)
    return result


if __name__ == "__main__":
    main()
