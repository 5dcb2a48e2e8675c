"""`generate --interactive` and `chat` with input piped in, and the pieces a terminal session
relies on, in-process: a reply stopped by Ctrl-C leaves nothing behind for the next (same tokens
as a fresh session, grad mode back on), and the chat banner tells a small model for what it is.
The keys themselves (arrow keys, Ctrl-C, Ctrl-D) are typed on a pseudo-terminal in
test_chat_pty.py."""
import importlib
import subprocess
import sys
import types

import pytest

import tinygpt
from test_cli_use import CFG, HELLO, constant_model, tinygpt as run_tinygpt
from tinygpt import GPTModel, manual_seed
from tinygpt import cli
from tinygpt.cli import inference
from tinygpt.train.checkpoint import save_checkpoint

STOP_AT = 3  # the step at which the simulated Ctrl-C arrives


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """A random tiny GPT: greedy decoding gives a varied reply, so a stale KV cache or a changed
    state would change it."""
    manual_seed(7)
    path = tmp_path_factory.mktemp("random") / "model.safetensors"
    save_checkpoint(path, GPTModel(CFG), config=CFG)
    return path


def _session(path, chat=True, max_new_tokens=8):
    # the arguments as the command's own parser gives them (every flag, with its default)
    cli._register_commands()
    parser, _ = cli.build_parser()
    command = ["chat"] if chat else ["generate", "--prompt", "x"]
    args = parser.parse_args([*command, "--model", str(path), "--max-new-tokens", str(max_new_tokens),
                              "--temperature", "0", "--seed", "123"])
    return inference.Session(args, chat=chat)


def test_a_stopped_reply_leaves_nothing_behind(random_model, monkeypatch, capsys):
    fresh = _session(random_model).reply("Name a colour.")
    capsys.readouterr()
    session = _session(random_model)
    gen = importlib.import_module("tinygpt.model.generate")  # the module, not the function
    next_token, calls = gen._next_token, []

    def interrupted(*args, **kwargs):  # Ctrl-C while the model works (inside no_grad)
        calls.append(1)
        if len(calls) == STOP_AT:
            raise KeyboardInterrupt
        return next_token(*args, **kwargs)
    monkeypatch.setattr(gen, "_next_token", interrupted)
    inference._stoppable(lambda: session.reply("Tell me a long story."), at_terminal=True)
    assert capsys.readouterr().out.endswith(" [stopped]\n")
    assert tinygpt.is_grad_enabled(), "the stopped reply left grad mode off"
    monkeypatch.setattr(gen, "_next_token", next_token)
    assert session.reply("Name a colour.") == fresh  # afresh: no cache or state carried over
    assert len(fresh) > 0


def test_with_input_piped_in_ctrl_c_ends_the_command(random_model, monkeypatch):
    session = _session(random_model)

    def interrupted(token):
        raise KeyboardInterrupt
    monkeypatch.setattr(inference.TextStream, "add", lambda self, token: interrupted(token))
    with pytest.raises(KeyboardInterrupt):
        inference._stoppable(lambda: session.reply("Hi"), at_terminal=False)


def _banner(model, at_terminal=True):
    return inference.chat_banner("m", types.SimpleNamespace(model=model, style="a format"),
                                 at_terminal)


def test_the_banner_says_a_small_gpt_cannot_follow_instructions():
    small = _banner(constant_model(HELLO))
    assert "far too small to follow instructions" in small and "1.6M parameters" in small
    assert 'tinygpt finetune-instruct --weights "gpt2-medium (355M)"' in small
    assert "reward margins" in small  # what a DPO run of it can show
    # GPT-2 small's width (a short vocabulary keeps the test light): no such note
    wide = GPTModel(dict(CFG, vocab_size=64, context_length=8, emb_dim=768, n_heads=12))
    assert _banner(wide).count("\n") == 0 and "too small" not in _banner(wide)


def test_the_banner_names_the_keys_that_work():
    assert "Ctrl-C during a reply stops it" in _banner(constant_model(HELLO), at_terminal=True)
    piped = _banner(constant_model(HELLO), at_terminal=False)
    assert "Ctrl-C" not in piped and "/exit or the end of the input ends" in piped


def test_an_empty_prompt_is_refused_on_one_line(random_model):
    out = run_tinygpt("generate", "--model", str(random_model), "--prompt", "")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "tinygpt generate: error: --prompt is empty: give the text the model should continue"]


def test_piped_chat_shows_no_prompt_and_loads_no_readline(random_model):
    script = ("import sys; from tinygpt.cli import main; code = main(sys.argv[1:]); "
              "print('readline loaded' if 'readline' in sys.modules else 'no readline'); "
              "sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", script, "chat", "--model", str(random_model),
                          "--max-new-tokens", "2"], input="Hi\n\n  \nHo", capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "no readline" and "you> " not in out.stdout
    assert len([line for line in lines if line.startswith("model> ")]) == 2  # blank lines skipped
