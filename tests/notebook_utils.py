"""Running the notebooks in notebooks/ for tests/test_notebooks.py: each in a fresh kernel, in a
temporary directory (what they write goes under its runs/), with the network unreachable."""
import json
import os
import pathlib
import re
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# One per stage, in the book's order.
ORDER = ["appendix_a_engine", "ch02_text", "ch03_attention", "ch04_gpt", "ch05_pretrain",
         "ch06_classify", "ch07_instruct", "appendix_d_training", "dpo", "modern_llms",
         "gradcheck_toolkit"]
NOTEBOOK_LIMIT = 600  # seconds a notebook may take (each one needs well under a minute or two)
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: every connection is refused at once


def skip_without_notebooks():
    if not NOTEBOOKS.is_dir():
        pytest.skip(f"no {NOTEBOOKS} (the wheel pass copies tests/ alone): the editable pass runs them")


def skip_without_jupyter():
    """nbclient, nbformat and ipykernel come with the [notebooks] extra."""
    skip_without_notebooks()
    for module in ("nbclient", "nbformat", "ipykernel"):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{module} is not installed: pip install -e \".[notebooks]\" to execute the notebooks")


def read(name: str) -> dict:
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))


def offline_env(home) -> dict:
    """The kernel's environment: no proxy but a dead one, Hub and downloads pointed at nothing,
    an empty tinygpt cache at `home`, matplotlib free to use the inline backend."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.update(TINYGPT_HOME=str(home), TINYGPT_HF_ENDPOINT=UNREACHABLE, HF_HUB_OFFLINE="1",
               HF_ENDPOINT=UNREACHABLE, http_proxy=UNREACHABLE, https_proxy=UNREACHABLE,
               HTTP_PROXY=UNREACHABLE, HTTPS_PROXY=UNREACHABLE, no_proxy="", NO_PROXY="")
    return env


def execute(nb, workdir, home):
    """Run every cell of the notebook node `nb` (nbformat) in `workdir`; raises
    nbclient.exceptions.CellExecutionError at the first failing cell. Returns the seconds."""
    from nbclient import NotebookClient
    pathlib.Path(home).mkdir(parents=True, exist_ok=True)
    client = NotebookClient(nb, timeout=NOTEBOOK_LIMIT, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    client.execute(env=offline_env(home))
    return time.perf_counter() - start


def load(name: str):
    import nbformat
    return nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)


def text_of(nb) -> str:
    """Everything the code cells printed (streams and plain-text results), in order."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.output_type == "stream" and out.name == "stdout":
                parts.append(out.text)
            elif out.output_type == "execute_result":
                parts.append(out.data.get("text/plain", "") + "\n")
    return "".join(parts)


def images_of(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []))


def labelled_blocks(text: str, label: str) -> dict:
    """{first line: the block} for each line matching `label` at a line start, the block being
    that line and the indented or bracketed lines after it (how NumPy prints an array)."""
    blocks, current = {}, None
    for line in text.splitlines():
        if re.match(label, line):
            current = line
            blocks[current] = [line]
        elif current is not None and (line[:1] in (" ", "[") or not line.strip()):
            blocks[current].append(line)
        else:
            current = None
    return {k: "\n".join(v).strip() for k, v in blocks.items()}
