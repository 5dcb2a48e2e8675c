"""`tinygpt chat` and `tinygpt generate --interactive` at a terminal, as a person uses them: the
command runs on a pseudo-terminal (its controlling terminal, so a typed Ctrl-C is a SIGINT from
the terminal, as at a keyboard) and the test types keys and reads the screen's bytes.

- a line edited with the arrow keys reaches the model as edited, and up arrow recalls it;
- Ctrl-C during a reply stops that reply ("[stopped]"), the next message is answered, and the
  chat is still open; Ctrl-D at the prompt ends it with the footer on a line of its own;
- Ctrl-C at the prompt ends the command cleanly (status 0), the footer on its own line.
Every read has a deadline and the child is killed whatever happens."""
import os
import re
import select
import subprocess
import sys
import time

import pytest

from test_cli_use import CFG, EOS, HELLO, constant_model
from tinygpt.train.checkpoint import save_checkpoint

if not hasattr(os, "login_tty"):
    pytest.skip("needs POSIX pseudo-terminals (os.openpty, os.login_tty)", allow_module_level=True)
pytest.importorskip("readline", reason="line editing comes from Python's readline module")

LEFT, UP, CTRL_C, CTRL_D = b"\x1b[D", b"\x1b[A", b"\x03", b"\x04"
# the child makes the pseudo-terminal its controlling terminal, then becomes `tinygpt`
LAUNCH = ("import os, sys; os.login_tty(os.open(sys.argv[1], os.O_RDWR)); "
          "os.execv(sys.executable, [sys.executable, '-m', 'tinygpt'] + sys.argv[2:])")
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]")
WAIT = 120.0  # seconds for any one thing to appear (the first includes importing NumPy, Numba)


class Terminal:
    """A command on a pseudo-terminal: `type` keys, `expect` text on the screen."""

    def __init__(self, *args):
        self.master, slave = os.openpty()
        env = dict(os.environ, TERM="xterm", INPUTRC=os.devnull)  # readline's default keys
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", LAUNCH, os.ttyname(slave), *args],
                                         stdin=slave, stdout=slave, stderr=slave, env=env)
        finally:
            os.close(slave)
        self.screen, self.seen = "", 0  # everything shown, and how much of it expect consumed

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def expect(self, text: str, timeout: float = WAIT) -> str:
        """Wait until `text` is shown after what earlier expects consumed; returns the screen
        from there up to and including it (escape sequences and carriage returns removed)."""
        deadline = time.monotonic() + timeout
        while (at := self.screen.find(text, self.seen)) < 0:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"{text!r} not shown; the screen after the last match:\n"
                                     f"{self.screen[self.seen:]!r}")
        shown, self.seen = self.screen[self.seen:at + len(text)], at + len(text)
        return shown

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], min(timeout, 1.0))
        if not ready:
            return self.proc.poll() is None or timeout > 1.0
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the command has exited and closed the terminal
            return False
        self.screen += ANSI.sub(b"", data).replace(b"\r", b"").decode("utf-8", "replace")
        return bool(data)

    def close(self, wait: float = 30.0) -> int | None:
        """The exit status, waiting `wait` seconds for a command that is ending; None if it had
        to be killed. Closing again changes nothing."""
        try:
            return self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.master is not None:
                os.close(self.master)
                self.master = None


def ctrl_c_at_the_prompt(term: Terminal) -> None:
    """Press Ctrl-C while the command waits at its prompt, again if it did not notice. CPython's
    readline loop checks for a SIGINT when its select() is interrupted, so one that arrives in
    the instant between showing the prompt and entering select() waits for the next: a person
    never types that fast, a test can."""
    for _ in range(10):
        term.type(CTRL_C)
        ready, _, _ = select.select([term.master], [], [], 3.0)
        if ready or term.proc.poll() is not None:
            return
    raise AssertionError("Ctrl-C at the prompt was not answered")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two checkpoints: one that says `hello` forever, one that ends every reply at once."""
    tmp = tmp_path_factory.mktemp("pty")
    for name, token in (("hello", HELLO), ("eos", EOS)):
        save_checkpoint(tmp / name / "model.safetensors", constant_model(token), config=CFG)
    return tmp


@pytest.fixture
def terminal():
    opened = []
    yield lambda *args: opened.append(Terminal(*args)) or opened[-1]
    for term in opened:  # killed even when the test failed halfway
        term.close(wait=0)


def test_arrow_keys_edit_the_line_and_up_recalls_it(models, terminal):
    # the end-token model adds nothing, so what generate prints back is exactly what it received
    term = terminal("generate", "--model", str(models / "eos"), "--interactive")
    term.expect("prompt> ")
    term.type(b"helo" + LEFT + b"l\r")  # typo fixed in place: "hel|o" -> "hell|o"
    assert "\nhello\n" in term.expect("prompt> ")
    term.type(UP + b"\r")  # the previous line, from this session's history
    assert term.expect("prompt> ").endswith("hello\nhello\nprompt> ")
    ctrl_c_at_the_prompt(term)  # ends, cleanly, the footer on its own line
    assert term.expect("took") == "\n(generate took"  # right after the "prompt> " above
    assert term.close() == 0


def test_ctrl_c_stops_the_reply_not_the_chat_and_ctrl_d_ends_it(models, terminal):
    # --max-new-tokens far beyond what the test waits for: the reply goes on until stopped
    term = terminal("chat", "--model", str(models / "hello"), "--max-new-tokens", "1000000")
    term.expect("you> ")
    # the first message mistyped and fixed with the arrow keys, the second recalled by up arrow
    for keys in (b"Say hllo." + 4 * LEFT + b"e\r", UP + b"\r"):
        term.type(keys)
        typed = term.expect("model> hellohello")
        term.type(CTRL_C)
        assert term.expect("you> ").endswith(" [stopped]\nyou> ")
        assert term.proc.poll() is None, "the chat ended instead of stopping the reply"
    assert typed.startswith("Say hello.\n"), "up arrow should bring back the line as edited"
    term.type(CTRL_D)
    screen = term.expect("took")
    assert screen == "\n(chat took", "the footer should start a line of its own"
    term.expect("\n")
    assert term.close() == 0
    assert "Traceback" not in term.screen and "interrupted" not in term.screen


def test_the_chat_banner_tells_a_small_model_for_what_it_is(models, terminal):
    term = terminal("chat", "--model", str(models / "eos"))
    banner = term.expect("you> ")
    assert "Ctrl-C during a reply stops it" in banner
    assert "far too small to follow instructions" in banner
    assert 'finetune-instruct --weights "gpt2-medium (355M)"' in banner
    term.type(b"/exit\r")
    term.expect("took")
    assert term.close() == 0
