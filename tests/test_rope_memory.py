"""RoPE tables follow the positions in use, not the context a config claims (issue 36): a tiny
Qwen3 / Llama 3 with context_length 20,000,000 builds and runs in little memory (tables for
every claimed position would take gigabytes), and computes what the same weights compute with a
small context_length."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from modern_models import TINY_LLAMA, TINY_QWEN3, tokens

import tinygpt as tg
from tinygpt.model import Llama3Model, Qwen3Model, generate

HUGE = 20_000_000
MODELS = {"qwen3": (Qwen3Model, TINY_QWEN3), "llama": (Llama3Model, TINY_LLAMA)}

CHILD = """
import resource, sys
import numpy as np
import tinygpt as tg
from tinygpt.model import Llama3Model, Qwen3Model
cfg = {**eval(sys.argv[1]), "context_length": %d}
model = (Qwen3Model if sys.argv[2] == "qwen3" else Llama3Model)(cfg)
for dtype in (np.float32, np.float64):
    with tg.no_grad():
        model.to(dtype)(np.arange(9).reshape(1, 9) %% cfg["vocab_size"])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)  # peak RSS, MB
""" % HUGE


@pytest.mark.parametrize("kind", MODELS)
def test_a_huge_context_length_costs_no_memory_until_used(kind):
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", CHILD, repr(MODELS[kind][1]), kind], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) < 400, out.stdout  # float32 tables for HUGE: 1.3 GB


@pytest.mark.parametrize("kind", MODELS)
def test_outputs_equal_a_small_context_length_and_tables_grow_as_used(kind):
    cls, cfg = MODELS[kind]
    models = []
    for ctx in (cfg["context_length"], HUGE):
        tg.manual_seed(5)
        models.append(cls({**cfg, "context_length": ctx}).to(np.float64).eval())
    small, huge = models
    ids = tokens(cfg, batch=2, length=9)
    with tg.no_grad():
        np.testing.assert_array_equal(huge(ids).data, small(ids).data)
    cos, sin = huge.rope_params(np.float64, 9)
    assert cos.shape[0] == 9 and sin.shape == cos.shape      # the positions of the forward only
    prompt = ids[:1, :3]
    n = cfg["context_length"] - 3
    np.testing.assert_array_equal(generate(huge, prompt, n, cfg["context_length"]),
                                  generate(small, prompt, n, cfg["context_length"]))
    assert huge.rope_params(np.float64, 1)[0].shape[0] <= 2 * cfg["context_length"]
    want = small.rope_params(np.float64)                     # all context_length positions
    got = huge.rope_params(np.float64, cfg["context_length"])
    np.testing.assert_array_equal(got[0][:cfg["context_length"]], want[0])
    np.testing.assert_array_equal(got[1][:cfg["context_length"]], want[1])
