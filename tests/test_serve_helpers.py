"""What the `tinygpt serve` tests share: a tiny offline checkpoint, the server started as a user
starts it (`python -m tinygpt serve --port 0`, on 127.0.0.1, stopped with SIGTERM), the server
in-process on a free port, and JSON requests with a timeout. Tested here: the text a stream sends
(`TextOut`) around stop strings and characters split over tokens, and the loopback check."""
import contextlib
import json
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from tinygpt import GPTModel, manual_seed
from tinygpt.train.checkpoint import save_checkpoint

CFG = {"vocab_size": 50257, "context_length": 96, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
       "drop_rate": 0.0, "qkv_bias": False}
TIMEOUT = 60  # seconds, for every request


def make_checkpoint(folder, seed=0):
    """A random tiny GPT (GPT-2's vocabulary, so GPT-2's tokenizer applies) saved as a tinygpt
    checkpoint in `folder`; returns the folder."""
    manual_seed(seed)
    save_checkpoint(folder / "model.safetensors", GPTModel(CFG), config=CFG)
    return folder


def make_hf_folder(folder, model_cls, cfg, write_tokenizer, seed=0):
    """A tiny random `model_cls(cfg)` in Hugging Face's layout beside the tokenizer.json that
    `write_tokenizer(path)` writes (tests/tokenizer_files.py): a folder `tinygpt chat/serve
    --model` reads offline. Returns the folder."""
    from tinygpt.weights import save_pretrained_hf
    write_tokenizer(folder / "tokenizer.json")
    manual_seed(seed)
    save_pretrained_hf(model_cls(cfg).eval(), folder)
    return folder


class ServerProcess:
    """`python -m tinygpt serve` in a subprocess; `url` once it listens."""

    def __init__(self, model, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "tinygpt", "serve", "--model",
                                      str(model), "--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self._first_line(180.0)
        if " at http://" not in line:
            self.stop()
            raise AssertionError(f"the server did not start: {line!r} {self.stderr!r}")
        self.url = line.split(" at ", 1)[1].split("/ ", 1)[0]
        self.stderr = ""

    def _first_line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else ""

    def rss_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as a service manager stops it; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, self.stderr = self.proc.communicate(timeout=timeout)
        return self.proc.returncode


@contextlib.contextmanager
def in_process_server(model_folder, **engine_options):
    """The server in a thread of this process (its engine reachable for the test) on a free
    port of 127.0.0.1; shut down on exit."""
    from tinygpt.cli.models import load_text_model
    from tinygpt.serve import Engine, make_server
    engine = Engine(load_text_model(str(model_folder), chat=True), "tiny", **engine_options)
    server = make_server(engine, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        engine.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def post(url, path, body, headers=None, raw=None):
    """POST JSON (or the bytes `raw`) -> (HTTP status, parsed JSON or the text)."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method="POST", headers={
        "Content-Type": "application/json", **(headers or {})})
    return _open(request)


def get(url, path, headers=None):
    return _open(urllib.request.Request(url + path, headers=headers or {}))


def _open(request):
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def events(text: str) -> list:
    """The data of each server-sent event in a response body."""
    out = [block[len("data: "):] for block in text.split("\n\n") if block.startswith("data: ")]
    return [d if d == "[DONE]" else json.loads(d) for d in out]


def assert_openai_error(status, body, want_status, param=None):
    assert status == want_status, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param, body


def wait_until(condition, timeout=TIMEOUT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return False


class Chars:
    """A tokenizer whose ids are byte values: decode as UTF-8 with replacement, as GPT-2's
    byte-level BPE does for an unfinished character."""

    @staticmethod
    def decode(ids):
        return bytes(ids).decode("utf-8", errors="replace")


def _feed(out, data: bytes) -> list:
    return [out.add(b) for b in data] + [out.finish()]


def test_text_out_holds_back_an_unfinished_character():
    from tinygpt.serve import TextOut
    pieces = _feed(TextOut(Chars()), "aé€".encode())
    assert pieces == ["a", "", "é", "", "", "€", ""]


def test_text_out_cuts_at_the_first_stop_string_and_never_sends_its_start():
    from tinygpt.serve import TextOut
    out = TextOut(Chars(), stops=("END", "xyz"))
    pieces = _feed(out, b"abcENxENDmore")
    assert "".join(pieces) == "abcENx" and out.stopped
    assert pieces[:5] == ["a", "b", "c", "", ""]  # "E", "EN" could begin "END": held back
    out = TextOut(Chars(), stops=("END",))
    assert "".join(_feed(out, b"abcEN")) == "abcEN" and not out.stopped  # the end flushes


def test_loopback_addresses_and_the_warning_for_any_other_host():
    from tinygpt.cli.serve import host_warning
    from tinygpt.serve.server import is_loopback
    assert all(map(is_loopback, ("127.0.0.1", "127.0.0.2", "::1", "localhost")))
    assert not any(map(is_loopback, ("0.0.0.0", "192.168.1.5", "::", "example.com")))
    assert host_warning("127.0.0.1") is None and host_warning("localhost") is None
    assert "warning: listening on 0.0.0.0" in host_warning("0.0.0.0")
    assert "no authentication" in host_warning("192.168.1.5")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("serve") / "tiny")


def test_sigterm_during_a_stream_stops_the_server_cleanly(checkpoint):
    server = ServerProcess(checkpoint, "--max-tokens", "80")
    try:
        request = urllib.request.Request(server.url + "/v1/completions", method="POST",
                                         data=json.dumps({"prompt": "Hi", "max_tokens": 80,
                                                          "stream": True}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            assert response.readline().startswith(b"data: ")
            status = server.stop()
    finally:
        status = server.stop()
    assert status == 0, server.stderr
    assert "stopping" in server.stderr and server.proc.poll() == 0


def test_import_tinygpt_and_its_cli_leave_the_server_unloaded():
    script = ("import sys, tinygpt, tinygpt.viz, tinygpt.cli; tinygpt.cli._register_commands(); "
              "print(sorted(m for m in sys.modules if m.startswith('tinygpt.serve')))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=TIMEOUT * 2)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_the_page_files_are_package_data():
    import configparser
    import fnmatch
    import pathlib
    import tinygpt.serve
    cfg = configparser.ConfigParser()
    cfg.read(pathlib.Path(__file__).parents[1] / "setup.cfg")
    globs = [g.strip() for g in cfg["options.package_data"]["tinygpt.serve.static"].split(",")]
    static = pathlib.Path(tinygpt.serve.__file__).parent / "static"
    names = sorted(p.name for p in static.iterdir() if p.suffix != ".py" and p.is_file())
    assert names == ["app.js", "index.html", "style.css"]
    assert all(any(fnmatch.fnmatch(n, g) for g in globs) for n in names), globs


@pytest.mark.parametrize("args, message", [
    (["--model", "no/such/model/anywhere"], "no/such/model/anywhere"),
    (["--model", "x", "--port", "70000"], "--port"),
    (["--model", "x", "--max-tokens", "0"], "--max-tokens"),
])
def test_the_command_refuses_bad_arguments_in_one_line(args, message):
    out = subprocess.run([sys.executable, "-m", "tinygpt", "serve", *args], capture_output=True,
                         text=True, timeout=TIMEOUT * 2)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2 and "Traceback" not in out.stderr
