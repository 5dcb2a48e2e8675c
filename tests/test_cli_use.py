"""Using a trained model from the command line, as a user would, in a subprocess: `chat` (with a
scripted stdin), `generate --interactive`, `show` and `export`; argument mistakes refused at once."""
import subprocess
import sys

import numpy as np
import pytest

from tinygpt import GPTModel, manual_seed
from tinygpt.train.checkpoint import save_checkpoint

CFG = {"vocab_size": 50257, "context_length": 32, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
       "drop_rate": 0.0, "qkv_bias": False}
EOS = 50256
HELLO = 31373  # GPT-2's token for "hello"


def tinygpt(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "tinygpt", *args], capture_output=True,
                          text=True, input=stdin, timeout=300)


def constant_model(token: int) -> GPTModel:
    """A model that predicts `token` after any input: final_norm outputs one fixed vector and
    only `token`'s row of out_head points along it."""
    manual_seed(1)
    model = GPTModel(CFG)
    h = np.linspace(1.0, 2.0, CFG["emb_dim"], dtype=np.float32)
    model.final_norm.scale.data[...] = 0.0
    model.final_norm.shift.data[...] = h
    model.out_head.weight.data[...] = 0.0
    model.out_head.weight.data[token] = 10.0 * h
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("use")
    for name, token in (("eos", EOS), ("hello", HELLO)):
        save_checkpoint(tmp / name / "model.safetensors", constant_model(token), config=CFG)
    return tmp


def test_chat_streams_until_the_end_token_and_quits_on_exit(checkpoints):
    out = tinygpt("chat", "--model", str(checkpoints / "eos"), "--max-new-tokens", "7",
                  stdin="Say hello.\nAnd again.\n/exit\nnever read\n")
    assert out.returncode == 0, out.stderr
    replies = [line for line in out.stdout.splitlines() if line.startswith("model> ")]
    assert replies == ["model> ", "model> "]  # the end token came first: nothing to say, twice


def test_chat_runs_to_max_new_tokens_without_an_end_token(checkpoints):
    out = tinygpt("chat", "--model", str(checkpoints / "hello"), "--max-new-tokens", "5",
                  stdin="Greet me.\n")  # end of input ends the chat, as Ctrl-D does
    assert out.returncode == 0, out.stderr
    replies = [line for line in out.stdout.splitlines() if line.startswith("model> ")]
    assert replies == ["model> hellohellohellohellohello"]


def test_alpaca_prompt_is_the_books_chapter_7_format():
    from tinygpt.cli.inference import alpaca_prompt
    # the prompt template of the book's section 7.2 (format_input), then the response header
    assert alpaca_prompt("Name a colour.") == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nName a colour.\n\n### Response:\n")


def test_generate_interactive_answers_each_line(checkpoints):
    out = tinygpt("generate", "--model", str(checkpoints / "hello"), "--interactive",
                  "--max-new-tokens", "2", stdin="Hi\n\n \nThere\nend")  # blank lines skipped
    assert out.returncode == 0, out.stderr
    # piped: a blank line between answers, as multi-line answers would otherwise run together
    assert out.stdout.splitlines() == ["Hihellohello", "", "Therehellohello", "", "endhellohello"]


def test_show_prints_config_and_export_drops_the_optimizer(tmp_path, checkpoints):
    from tinygpt.optim import AdamW
    model = constant_model(HELLO)
    opt = AdamW(model.parameters(), lr=0.0)  # lr 0: the weights stay, the moments are made
    model(np.array([[1, 2, 3]])).sum().backward()
    opt.step()
    full = tmp_path / "full.safetensors"
    save_checkpoint(full, model, opt, config=CFG)
    out = tinygpt("show", str(full))
    assert out.returncode == 0, out.stderr
    assert "emb_dim" in out.stdout and "optimizer" in out.stdout
    small = tmp_path / "model-only.safetensors"
    out = tinygpt("export", str(full), str(small))
    assert out.returncode == 0, out.stderr
    assert 0 < small.stat().st_size < full.stat().st_size / 2
    out = tinygpt("generate", "--model", str(small), "--prompt", "Hi", "--max-new-tokens", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Hihello"


@pytest.mark.parametrize("args", [
    ["pretrain", "--text", "x.txt", "--epochs", "0"],
    ["pretrain", "--text", "x.txt", "--epochs", "-3"],
    ["pretrain", "--text", "x.txt", "--eval-freq", "0"],
    ["pretrain", "--text", "x.txt", "--eval-iter", "0"],
    ["pretrain", "--text", "x.txt", "--batch-size", "0"],
    ["pretrain", "--text", "x.txt", "--lr", "nan"],
    ["pretrain", "--text", "x.txt", "--lr", "-1"],
    ["generate", "--model", "m", "--prompt", "x", "--temperature", "nan"],
    ["generate", "--model", "m", "--prompt", "x", "--max-new-tokens", "-1"],
    ["generate", "--model", "m", "--prompt", "x", "--top-k", "0"],
    ["chat", "--model", "m", "--temperature", "inf"],
])
def test_bad_numbers_are_refused_before_any_work(args):
    out = tinygpt(*args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert args[-2] in out.stderr  # names the option


def test_a_directory_as_text_is_named_as_such(tmp_path):
    out = tinygpt("pretrain", "--text", str(tmp_path))
    assert out.returncode == 2 and "is a directory" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_model_with_non_finite_weights_is_refused(tmp_path):
    model = constant_model(HELLO)
    model.trf_blocks[0].ff.layers[0].weight.data[0, 0] = np.nan
    with pytest.MonkeyPatch.context() as mp:  # save_checkpoint refuses NaN: a crafted file
        mp.setattr("tinygpt.train.checkpoint.check_finite_state", lambda *a: None)
        save_checkpoint(tmp_path / "nan.safetensors", model, config=CFG)
    out = tinygpt("generate", "--model", str(tmp_path / "nan.safetensors"), "--prompt", "Hi")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "nan" in out.stderr


def test_training_that_diverges_stops_with_one_line_and_keeps_no_bad_checkpoint(tmp_path):
    from tinygpt.assets import asset_path
    text = tmp_path / "story.txt"
    text.write_text(asset_path("the-verdict.txt").read_text()[:3000])
    out = tinygpt("pretrain", "--text", str(text), "--config", "tiny", "--epochs", "2",
                  "--lr", "1e6", "--out", str(tmp_path / "run"), "--quiet")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "non-finite" in out.stderr or "nan" in out.stderr.lower()
    assert not (tmp_path / "run" / "model.safetensors").exists()
