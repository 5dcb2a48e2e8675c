"""Page faults per training step, with and without `tinygpt.tune_malloc()` (tinygpt/core/malloc.py).

    python bench/page_faults.py                       # bench-tiny and small, 1 thread
    python bench/page_faults.py --configs bench-tiny --steps 5 --blocks 3

Each (config, setting) runs in a fresh child process (the setting is process-wide and cannot be
undone): build the model and AdamW, 3 untimed steps, then `--blocks` blocks of `--steps` training
steps; reported: minor page faults (ru_minflt) per step of the quietest block and its ms per step.
The quietest block, because the OS now and then faults pages back in (reclaim, migration, a new
thread's stack): noise that hits one block, while glibc returning activations to the OS shows in
every block. Without tune_malloc, glibc hands a small model's 0.1-2 MB activations back to the OS
after each use and faults them in again on the next step.
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import SRC, header, markdown_table, thread_env  # noqa: E402
from _frameworks import CONFIGS  # noqa: E402

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
import tinygpt
applied = tinygpt.tune_malloc() if {tuned} else False
from _frameworks import CONFIGS, batch, tinygpt_fns
from tinygpt.optim import AdamW
cfg, bs = CONFIGS[{config!r}]
tinygpt.manual_seed(0)
model = tinygpt.GPTModel(cfg)
opt = AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
step, _ = tinygpt_fns(model, opt, *batch(cfg, bs, 0))
for _ in range(3):
    step()
blocks = []
for _ in range({blocks}):
    faults, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range({steps}):
        step()
    blocks.append(((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / {steps},
                   1e3 * (time.perf_counter() - t0) / {steps}))
print(json.dumps({{"applied": applied, "blocks": blocks}}))
"""


def faults_per_step(config, tuned, steps, blocks, threads):
    """(tune_malloc applied?, faults per step, ms per step) of the quietest block, in a child."""
    code = CHILD.format(root=SRC, bench=os.path.dirname(os.path.abspath(__file__)), tuned=tuned,
                        config=config, steps=steps, blocks=blocks)
    # a clean slate: neither glibc's own MALLOC_* variables nor tinygpt's opt-out from this shell
    env = {k: v for k, v in thread_env(threads).items() if not k.startswith("MALLOC_") and k != "TINYGPT_MALLOC"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    faults, ms = min(res["blocks"])
    return res["applied"], faults, ms


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="bench-tiny,small", help="comma list from: " + ", ".join(CONFIGS))
    p.add_argument("--steps", type=int, default=5, help="training steps per block")
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    print(header("tinygpt page faults per training step (bench/page_faults.py)"))
    rows = []
    for config in args.configs.split(","):
        if config not in CONFIGS:
            sys.exit(f"unknown config {config!r}: choose from {', '.join(CONFIGS)}")
        runs = [faults_per_step(config, tuned, args.steps, args.blocks, args.threads) for tuned in (False, True)]
        (_, f0, ms0), (applied, f1, ms1) = runs
        rows.append([config, f"{f0:.0f}", f"{ms0:.1f}", f"{f1:.0f}" if applied else "not applied", f"{ms1:.1f}"])
    print(f"\n### Minor page faults per training step ({args.threads} thread(s), quietest of "
          f"{args.blocks} blocks of {args.steps} steps)\n")
    print(markdown_table(["config", "faults (glibc default)", "ms/step", "faults (tune_malloc)", "ms/step"], rows))


if __name__ == "__main__":
    main()
