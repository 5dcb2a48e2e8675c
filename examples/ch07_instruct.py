"""Book chapter 7: instruction fine-tuning on the book's 1,100-entry dataset, then scoring.

With GPT-2 weights it is the book's setup (section 7.6): "gpt2-medium (355M)", 935 training
entries in batches of 8, AdamW lr 5e-5 and weight decay 0.1, 2 epochs, evaluation every 5 steps
over 5 batches, greedy responses of up to 256 tokens for the 110 test entries:

    python examples/ch07_instruct.py --weights "gpt2-medium (355M)"
    python examples/ch07_instruct.py --weights "gpt2-medium (355M)" --lora-rank 16   # appendix E
    python examples/ch07_instruct.py --weights "gpt2-medium (355M)" --ollama-model llama3

Offline by default: a small GPT (4 layers, 64-dim, 6.6M parameters) fine-tuned from scratch for
2 epochs (lr 2e-3), so that training, generating all 110 responses, saving and the offline score
finish in a few minutes on 2 CPU cores. It is far too small to follow instructions: it learns
the response format and common phrasing only, so expect a ROUGE-L F1 near 0.18, no exact
matches, and responses that do not answer. What it shows is the pipeline: the prompt format,
the falling loss curve, the responses file and the scores. A model that answers starts from
GPT-2 medium (--weights "gpt2-medium (355M)"), a long CPU run. Outputs in --out (default runs/ch07):
loss-plot.png, instruction-data-with-response.json (entries, responses, per-entry scores),
scores.json, model.safetensors (and lora.safetensors with --lora-rank).
"""
import argparse
import time

from tinygpt.argtypes import positive_float, positive_int
from tinygpt import tune_malloc
from tinygpt.finetune.instruct import OLLAMA_URL, run_instruction_finetune

# printed at the end of an offline run, beside the results it qualifies
OFFLINE_EXPECTATIONS = """\
What to expect offline: this small model (6.6M parameters, trained from scratch) is far too small
to follow instructions, so its responses do not answer them. What the run shows is the prompt
format, the loss curve and the scoring. For a model that answers, start from GPT-2 medium:
  python examples/ch07_instruct.py --weights "gpt2-medium (355M)"   (a long CPU run)"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help='e.g. "gpt2-medium (355M)" or a local path; '
                        "default: the small offline model")
    parser.add_argument("--epochs", type=positive_int)
    parser.add_argument("--lora-rank", type=positive_int)
    parser.add_argument("--lora-alpha", type=positive_float)
    parser.add_argument("--mask-prompt", action="store_true", help="exercise 7.2")
    parser.add_argument("--ollama-model", help="judge model served by Ollama (off by default)")
    parser.add_argument("--ollama-url", default=OLLAMA_URL)
    parser.add_argument("--out", default="runs/ch07")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    tune_malloc()  # an application's choice: see tinygpt/core/malloc.py

    start = time.perf_counter()
    result = run_instruction_finetune(weights=args.weights, out_dir=args.out, num_epochs=args.epochs,
                                      lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                                      mask_prompt=args.mask_prompt, ollama_model=args.ollama_model,
                                      ollama_url=args.ollama_url, quiet=args.quiet)
    wall = time.perf_counter() - start
    off = result["scores"]["offline"]
    print(f"final: train loss {result['train_losses'][-1]:.3f}, val loss {result['val_losses'][-1]:.3f}")
    print(f"test set ({off['num_entries']} entries): ROUGE-L F1 {off['rouge_l_f1']:.3f}, "
          f"exact match {off['exact_match']:.1%}")
    judge = result["scores"].get("ollama")
    if judge:
        print(f"Ollama judge {judge['model']}: " + (f"average {judge['average']:.2f}"
              if judge.get("average") is not None else f"failed: {judge.get('error')}"))
    print(f"wall time {wall:.1f} s (training {result['train_seconds']:.1f} s, "
          f"responses {result['generate_seconds']:.1f} s)")
    print(f"responses {result['responses']}, model {result['checkpoint']}"
          + (f", plot {result['plot']}" if "plot" in result else ""))
    if args.weights is None:
        print(OFFLINE_EXPECTATIONS)
    return result


if __name__ == "__main__":
    main()
