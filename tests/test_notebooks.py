"""The notebooks in notebooks/ (one per stage of the book) are stored without outputs, follow the
book's section order, execute top to bottom offline, and print the numbers the example scripts
print for the same settings. Executing them needs the [notebooks] extra (nbclient, ipykernel);
without it those tests skip and say so."""
import copy
import re
import subprocess
import sys

import pytest

from notebook_utils import (NOTEBOOK_LIMIT, NOTEBOOKS, ORDER, ROOT, execute, images_of,
                            labelled_blocks, load, read, skip_without_jupyter, skip_without_notebooks,
                            text_of)

# Figures each notebook must show inline: attention heatmaps, loss curves, accuracy plot, ...
MIN_IMAGES = {"ch03_attention": 1, "ch04_gpt": 1, "ch05_pretrain": 2, "ch06_classify": 2,
              "ch07_instruct": 1, "appendix_d_training": 2, "dpo": 2, "gradcheck_toolkit": 1}
_executed = {}  # name -> (executed notebook, seconds): each notebook runs once per session


def executed(name, tmp_path_factory):
    if name not in _executed:
        workdir = tmp_path_factory.mktemp(name)
        nb = load(name)
        seconds = execute(nb, workdir, workdir / "tinygpt-home")
        _executed[name] = (nb, seconds)
    return _executed[name]


def run_example(script, *args, cwd):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=NOTEBOOK_LIMIT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def same_matches(pattern, example_out, notebook_out, flags=re.M):
    """Every match of `pattern` in the example's output, in the notebook's, in the same order."""
    expected = re.findall(pattern, example_out, flags)
    assert expected, f"the example printed nothing matching {pattern!r}:\n{example_out[-2000:]}"
    assert re.findall(pattern, notebook_out, flags) == expected


# --- stored form -------------------------------------------------------------------------------

def test_one_notebook_per_stage_and_nothing_else():
    skip_without_notebooks()
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(ORDER)


@pytest.mark.parametrize("name", ORDER)
def test_stored_without_outputs(name):
    skip_without_notebooks()
    nb = read(name)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{name} cell {i} holds outputs: clear them before committing"
            assert cell["execution_count"] is None, f"{name} cell {i} holds an execution count"


def _section_numbers(name):
    """The book's section numbers of the notebook's headings, e.g. [(2, 2), (2, 3), ...]."""
    found = []
    for cell in read(name)["cells"]:
        if cell["cell_type"] == "markdown":
            for m in re.finditer(r"^#+ (?:[A-E]\.(\d+)|(\d+(?:\.\d+)+))\b", "".join(cell["source"]), re.M):
                if m.group(2) or name.startswith("appendix"):  # a chapter's appendix-E part aside
                    found.append(tuple(int(n) for n in (m.group(1) or m.group(2)).split(".")))
    return found


@pytest.mark.parametrize("name", [n for n in ORDER if n.startswith(("ch0", "appendix"))])
def test_headings_are_the_books_sections_in_order(name):
    skip_without_notebooks()
    numbers = _section_numbers(name)
    assert len(numbers) >= 4, f"{name}: headings without the book's section numbers"
    assert numbers == sorted(numbers), f"{name}: sections out of the book's order: {numbers}"
    chapter = re.match(r"ch0(\d)", name)
    if chapter:
        assert {n[0] for n in numbers} == {int(chapter.group(1))}


# --- execution ----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ORDER)
def test_runs_top_to_bottom_offline(name, tmp_path_factory):
    skip_without_jupyter()
    nb, seconds = executed(name, tmp_path_factory)
    assert seconds < NOTEBOOK_LIMIT, f"{name} took {seconds:.0f} s"
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    assert images_of(nb) >= MIN_IMAGES.get(name, 0), f"{name} shows too few figures"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


@pytest.mark.slow
def test_a_broken_cell_fails_the_run(tmp_path):
    """A cell that raises stops the run with CellExecutionError and leaves the rest unrun."""
    skip_without_jupyter()
    import nbformat
    from nbclient.exceptions import CellExecutionError
    nb = load("ch02_text")
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells.insert(first_code + 1, nbformat.v4.new_code_cell("undefined_name_in_a_broken_cell"))
    with pytest.raises(CellExecutionError, match="undefined_name_in_a_broken_cell"):
        execute(nb, tmp_path, tmp_path / "home")
    assert nb.cells[-1].get("execution_count") is None


# --- the numbers agree with the example scripts -------------------------------------------------

@pytest.mark.slow
def test_ch02_prints_what_the_example_prints(tmp_path, tmp_path_factory):
    skip_without_jupyter()
    notebook_out = text_of(executed("ch02_text", tmp_path_factory)[0])
    example_out = run_example("ch02_text.py", cwd=tmp_path)
    for pattern in (r"^the-verdict: \d+ characters$", r"^simple tokenizer: .*$",
                    r"^GPT-2 tokenizer: .*$", r"^token embeddings .*$",
                    r"^\d+ batches; first batch\ninputs:\n[\s\S]*?\]\]\ntargets:\n[\s\S]*?\]\]$"):
        same_matches(pattern, example_out, notebook_out)
    assert "GPT-2 tokenizer: 5145 tokens, vocabulary 50257" in notebook_out  # the book's count


@pytest.mark.slow
def test_ch03_prints_what_the_example_prints(tmp_path, tmp_path_factory):
    skip_without_jupyter()
    notebook_out = text_of(executed("ch03_attention", tmp_path_factory)[0])
    example_out = run_example("ch03_attention.py", "--out", str(tmp_path), cwd=tmp_path)
    expected = labelled_blocks(example_out, r"3\.\d\.\d ")
    got = labelled_blocks(notebook_out, r"3\.\d\.\d ")
    assert len(expected) == 9  # 3.3.1 (two), 3.4.1, 3.4.2, 3.5.1, 3.5.2, 3.5.3, 3.6.1, 3.6.2
    for label, block in expected.items():
        assert got.get(label) == block, label


@pytest.mark.slow
def test_ch04_prints_what_the_example_prints(tmp_path, tmp_path_factory):
    skip_without_jupyter()
    notebook_out = text_of(executed("ch04_gpt", tmp_path_factory)[0])
    example_out = run_example("ch04_gpt.py", cwd=tmp_path)
    for pattern in (r"^Output shape: .*$", r"^Total number of parameters: .*$",
                    r"^Number of trainable parameters considering weight tying: .*$",
                    r"^Total size of the model: .*$", r"^encoded: .*$", r"^Output: .*$",
                    r"^Decoded text: .*$"):
        same_matches(pattern, example_out, notebook_out)
    assert "Total number of parameters: 163,009,536" in notebook_out
    assert "KV-cached generate gives the same tokens: True" in notebook_out


@pytest.mark.slow
def test_ch05_trains_as_the_example_does(tmp_path, tmp_path_factory):
    """The notebook's defaults (tiny, 2 epochs) are `ch05_pretrain.py --config tiny --epochs 2`."""
    skip_without_jupyter()
    nb = executed("ch05_pretrain", tmp_path_factory)[0]
    notebook_out = text_of(nb)
    assert re.search(r'^CONFIG_NAME = "tiny"', nb.cells[1].source, re.M)
    assert re.search(r"^NUM_EPOCHS = 2\b", nb.cells[1].source, re.M)
    example_out = run_example("ch05_pretrain.py", "--config", "tiny", "--epochs", "2", "--quiet",
                              "--out", str(tmp_path / "ch05"), cwd=tmp_path)
    same_matches(r"^Ep \d+ \(Step \d+\): Train loss [\d.]+, Val loss [\d.]+$", example_out, notebook_out)
    same_matches(r"^final: train loss [\d.]+, val loss [\d.]+$", example_out, notebook_out)
    assert "reloaded model gives the same logits: True" in notebook_out
    # offline with an empty cache, the weights cell says how to get the weights
    assert 'tinygpt download "gpt2-small (124M)"' in notebook_out


@pytest.mark.slow
def test_ch05_weights_cell_loads_cached_weights(tmp_path):
    """With GPT-2 weights in the cache (here a small GPT saved in GPT-2's Hugging Face layout),
    section 5.5's cell loads them and generates, without any network."""
    skip_without_jupyter()
    import nbformat
    from tinygpt.model import GPTModel
    from tinygpt.train.pretrain import PRESETS
    from tinygpt.weights import gpt2_dir, save_pretrained
    home = tmp_path / "home"
    save_pretrained(GPTModel(PRESETS["tiny"]), gpt2_dir("gpt2-small (124M)", cache_dir=home))
    nb = load("ch05_pretrain")
    setup = [c for c in nb.cells if c.cell_type == "code"][:2]  # the settings and the imports
    weights_cell = next(c for c in nb.cells if c.cell_type == "code" and "load_gpt2(cached)" in c.source)
    small = nbformat.v4.new_notebook(cells=[copy.deepcopy(c) for c in (*setup, weights_cell)],
                                     metadata=nb.metadata)
    execute(small, tmp_path, home)
    out = text_of(small)
    assert "Output text:" in out and "Every effort moves you" in out
    assert "not in the cache" not in out


@pytest.mark.slow
def test_ch06_classifies_as_the_example_does(tmp_path, tmp_path_factory):
    """The notebook's defaults (offline, 2 epochs) are `ch06_classify.py --epochs 2`."""
    skip_without_jupyter()
    nb = executed("ch06_classify", tmp_path_factory)[0]
    notebook_out = text_of(nb)
    assert re.search(r"^NUM_EPOCHS = 2\b", nb.cells[1].source, re.M)
    example_out = run_example("ch06_classify.py", "--epochs", "2", "--quiet",
                              "--out", str(tmp_path / "ch06"), cwd=tmp_path)
    same_matches(r"^test accuracy [\d.]+% \(train [\d.]+%, validation [\d.]+%\)$", example_out, notebook_out)
    same_matches(r"^ *(?:not spam|spam): .*$", example_out, notebook_out)
    assert "1045 rows" in notebook_out and "max_length: 120" in notebook_out


@pytest.mark.slow
def test_later_stages_print_their_key_results(tmp_path_factory):
    """The notebooks without an example at the same settings: the results the book's reader
    checks, each computed by the library functions the examples call."""
    skip_without_jupyter()
    outs = {name: text_of(executed(name, tmp_path_factory)[0])
            for name in ("appendix_a_engine", "ch07_instruct", "dpo", "appendix_d_training",
                         "modern_llms", "gradcheck_toolkit")}
    assert "Total number of trainable model parameters: 2213" in outs["appendix_a_engine"]
    grads = re.search(r"dL/dw1: \[(-?[\d.]+)\]\ndL/db: \[(-?[\d.]+)\]", outs["appendix_a_engine"])
    assert grads and (round(float(grads[1]), 4), round(float(grads[2]), 4)) == (-0.0898, -0.0817)
    assert "train accuracy: 1.0  test accuracy: 1.0" in outs["appendix_a_engine"]
    assert "1100 entries: 935 train, 110 test, 55 val" in outs["ch07_instruct"]
    assert re.search(r"^test set \(10 entries\): ROUGE-L F1 [\d.]+", outs["ch07_instruct"], re.M)
    assert "LoRA model starts at the same outputs: True" in outs["ch07_instruct"]
    assert "merged model gives the LoRA model's outputs: True" in outs["ch07_instruct"]
    assert "loss 0.6931 (ln 2 = 0.6931), reward margin 0.0000" in outs["dpo"]
    assert re.search(r"^final validation: DPO loss [\d.]+ .*reward margin -?[\d.]+", outs["dpo"], re.M)
    assert "learning rates used match the schedule: True" in outs["appendix_d_training"]
    assert outs["modern_llms"].count("same as before for_inference: True") == 2
    assert outs["modern_llms"].count("after training, greedy: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 2]") == 2
    assert "gradcheck(softplus): passed" in outs["gradcheck_toolkit"]
    assert "a backward 1% off fails, as it should" in outs["gradcheck_toolkit"]
