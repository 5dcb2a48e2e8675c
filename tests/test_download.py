"""The downloader against a real HTTP server on 127.0.0.1 (port 0) that each test starts and
stops: full download with verification, resume of a cut connection through an HTTP Range
request, a bad checksum (file removed, error raised), a server that is down, and download_gpt2 /
load_gpt2 by model name through TINYGPT_HF_ENDPOINT. Offline and bounded in time (timeouts of
a few seconds, files of a few hundred KB)."""
import hashlib
import os
import re
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import tinygpt
from local_http import local_server
from tinygpt.model import GPTModel
from tinygpt.weights import (
    ChecksumError,
    DownloadError,
    WeightsError,
    download_file,
    download_gpt2,
    load_gpt2,
    save_pretrained,
)
from tinygpt.weights import download as dl

TIMEOUT = 5.0
BODY = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


class Handler(BaseHTTPRequestHandler):
    """Serves server.files {url path: bytes}; honours `Range: bytes=N-` (unless
    server.ranges is False); server.cut[path] = n sends only n body bytes once, then drops;
    server.endless[path] = n sends n bytes without a Content-Length, counting in server.sent
    what the client took. HEAD answers like the Hub's resolve URL: a 302 carrying
    server.linked[path] = (sha256, size) as X-Linked-Etag / X-Linked-Size."""

    def do_HEAD(self):
        srv = self.server
        srv.heads.append(self.path)
        if self.path not in srv.linked:
            self.send_error(404, "Not Found")
            return
        sha256, size = srv.linked[self.path]
        self.send_response(302)
        self.send_header("Location", "/cdn" + self.path)
        self.send_header("X-Linked-Etag", f'"{sha256}"')
        self.send_header("X-Linked-Size", str(size))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        if self.path in srv.endless:
            self._send_endless(srv, srv.endless[self.path])
            return
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start, m = 0, re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and srv.ranges:
            start = int(m.group(1))
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        cut = srv.cut.pop(self.path, None)
        self.wfile.write(body if cut is None else body[:cut])
        self.close_connection = True

    def _send_endless(self, srv, n):
        self.send_response(200)
        self.end_headers()
        block = b"x" * 65536
        try:
            while srv.sent < n:
                self.wfile.write(block)
                srv.sent += len(block)
        except OSError:  # the client hung up
            pass
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    with local_server(Handler, TIMEOUT, files={}, cut={}, requests=[], ranges=True, heads=[],
                      linked={}, endless={}, sent=0) as srv:
        yield srv


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(url, dest, **kw):
    return download_file(url, dest, progress=False, timeout=TIMEOUT, **kw)


def test_full_download_is_verified_and_renamed(server, tmp_path):
    server.files["/f.bin"] = BODY
    dest = fetch(server.url + "/f.bin", tmp_path / "sub" / "f.bin", sha256=sha(BODY), size=len(BODY))
    assert dest.read_bytes() == BODY and not (tmp_path / "sub" / "f.bin.part").exists()
    fetch(server.url + "/f.bin", dest, sha256=sha(BODY), size=len(BODY))  # cached: no request
    assert len(server.requests) == 1


def test_resume_after_cut_connection(server, tmp_path):
    server.files["/f.bin"] = BODY
    server.cut["/f.bin"] = 100_000
    dest, part = tmp_path / "f.bin", tmp_path / "f.bin.part"
    with pytest.raises(DownloadError) as info:
        fetch(server.url + "/f.bin", dest, sha256=sha(BODY), size=len(BODY), retries=0)
    assert str(part) in str(info.value) and server.url + "/f.bin" in str(info.value)
    assert part.stat().st_size == 100_000 and not dest.exists()
    fetch(server.url + "/f.bin", dest, sha256=sha(BODY), size=len(BODY))
    assert dest.read_bytes() == BODY and not part.exists()
    assert server.requests[-1] == ("/f.bin", "bytes=100000-")


def test_cut_connection_resumes_within_one_call(server, tmp_path):
    server.files["/f.bin"] = BODY
    server.cut["/f.bin"] = 5_000
    dest = fetch(server.url + "/f.bin", tmp_path / "f.bin", sha256=sha(BODY), retries=1)
    assert dest.read_bytes() == BODY
    assert [r for _, r in server.requests] == [None, "bytes=5000-"]


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    server.files["/f.bin"] = BODY
    server.ranges = False
    (tmp_path / "f.bin.part").write_bytes(BODY[:1234] + b"garbage")
    dest = fetch(server.url + "/f.bin", tmp_path / "f.bin", sha256=sha(BODY))
    assert dest.read_bytes() == BODY


def test_complete_part_of_unknown_size_is_finished_by_416(server, tmp_path):
    server.files["/f.bin"] = BODY
    (tmp_path / "f.bin.part").write_bytes(BODY)
    assert fetch(server.url + "/f.bin", tmp_path / "f.bin", sha256=sha(BODY)).read_bytes() == BODY


@pytest.mark.parametrize("kind", ["sha256", "size", "validate"])
def test_bad_download_is_deleted_and_reported(server, tmp_path, kind):
    server.files["/f.bin"] = BODY

    def refuse(path):
        raise ValueError("header lies")

    check = {"sha256": {"sha256": "0" * 64}, "size": {"size": len(BODY) - 1},
             "validate": {"validate": refuse}}[kind]
    dest = tmp_path / "f.bin"
    with pytest.raises(ChecksumError) as info:
        fetch(server.url + "/f.bin", dest, **check)
    assert server.url + "/f.bin" in str(info.value)
    assert re.search("deleted|nothing was downloaded", str(info.value))
    assert not dest.exists() and not (tmp_path / "f.bin.part").exists()


def test_a_longer_announced_body_is_refused_before_it_is_read(server, tmp_path):
    """The server announces its true length, which is not the size expected: nothing is read."""
    server.files["/big.bin"] = BODY
    with pytest.raises(ChecksumError, match="announces 300,000 bytes, expected 1,000"):
        fetch(server.url + "/big.bin", tmp_path / "big.bin", size=1000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("limit", [{"size": 1000}, {"max_bytes": 1000}])
def test_an_unannounced_longer_body_is_cut_at_the_expected_size(server, tmp_path, limit):
    """No Content-Length, 200 MB on offer: the download stops after the expected 1,000 bytes
    (+1 to see that more was coming) instead of writing what the server sends."""
    server.endless["/endless.bin"] = 200 << 20
    with pytest.raises(ChecksumError, match="more than the expected 1,000 bytes"):
        fetch(server.url + "/endless.bin", tmp_path / "e.bin", **limit)
    assert list(tmp_path.iterdir()) == []
    assert server.sent < 32 << 20  # the server was cut off early (socket buffers aside)


def test_server_down_names_the_url(tmp_path):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    url = f"http://127.0.0.1:{srv.server_address[1]}/gone.bin"
    srv.server_close()  # nothing listens on the port any more
    with pytest.raises(DownloadError, match=re.escape(url)) as info:
        fetch(url, tmp_path / "gone.bin")
    assert "offline" in str(info.value) and not (tmp_path / "gone.bin").exists()


def test_http_error_names_the_url(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        fetch(server.url + "/missing.bin", tmp_path / "m.bin")


# --- GPT-2 by name through a local "Hub" ----------------------------------------------------
TINY = {"vocab_size": 257, "context_length": 32, "emb_dim": 64, "n_heads": 4, "n_layers": 2,
        "drop_rate": 0.0, "qkv_bias": True, "tie_weights": True}
SIZES = {"dims": (64, 2, 4), "vocab_size": 257, "n_positions": 32}  # TINY as a named size


@pytest.fixture
def hub(server, tmp_path, monkeypatch):
    """A tiny model published as 'gpt2-medium' on the local server; cache in tmp_path."""
    tinygpt.manual_seed(5)
    model = GPTModel(TINY).eval()
    files = save_pretrained(model, tmp_path / "published")
    for name in ("config.json", "model.safetensors"):
        server.files[f"/gpt2-medium/resolve/main/{name}"] = (files / name).read_bytes()
    entry = {**dl.GPT2_MODELS["gpt2-medium (355M)"], **SIZES}
    monkeypatch.setitem(dl.GPT2_MODELS, "gpt2-medium (355M)", entry)
    monkeypatch.setenv("TINYGPT_HF_ENDPOINT", server.url)
    monkeypatch.setenv("TINYGPT_HOME", str(tmp_path / "home"))
    return model


def test_download_gpt2_and_load_by_name(server, hub, tmp_path):
    target = download_gpt2("355M", progress=False, timeout=TIMEOUT)
    assert target == tmp_path / "home" / "models" / "gpt2-medium"
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    model = load_gpt2("gpt2-medium (355M)", progress=False)  # cached: no new requests
    assert len(server.requests) == 2 and server.heads == [MODEL]  # nothing announced: shapes checked
    ids = np.arange(10)[None, :]
    with tinygpt.no_grad():
        np.testing.assert_array_equal(model(ids).data, hub(ids).data)


MODEL, CONFIG = "/gpt2-medium/resolve/main/model.safetensors", "/gpt2-medium/resolve/main/config.json"


def cached(tmp_path, name="gpt2-medium"):
    return tmp_path / "home" / "models" / name / "model.safetensors"


def test_download_is_checked_against_what_the_hub_announces(server, hub, tmp_path):
    body = server.files[MODEL]
    server.linked[MODEL] = (sha(body), len(body))
    download_gpt2("355M", progress=False, timeout=TIMEOUT)
    assert server.heads == [MODEL] and cached(tmp_path).read_bytes() == body


@pytest.mark.parametrize("lie", ["sha256", "size"])
def test_a_body_that_is_not_the_announced_file_is_refused(server, hub, tmp_path, lie):
    """The mirror's file differs from what the Hub announces for it: not cached."""
    body = server.files[MODEL]
    server.linked[MODEL] = ("0" * 64, len(body)) if lie == "sha256" else (sha(body), len(body) + 8)
    message = "0" * 64 if lie == "sha256" else f"expected {len(body) + 8:,} bytes"
    with pytest.raises(ChecksumError, match=message):
        download_gpt2("355M", progress=False, timeout=TIMEOUT, retries=0)
    assert not cached(tmp_path).exists() and not cached(tmp_path).with_suffix(".part").exists()


def test_a_wrong_model_for_the_named_size_is_refused_before_the_cache(server, hub, tmp_path):
    """A well-formed safetensors of another model (3 blocks, not 2) under the right config.json."""
    other = save_pretrained(GPTModel({**TINY, "n_layers": 3}), tmp_path / "other")
    server.files[MODEL] = (other / "model.safetensors").read_bytes()
    with pytest.raises(ChecksumError, match=r"gpt2-medium \(the size asked for\): n_layers is 2 but the weights hold blocks 0\.\.2"):
        download_gpt2("355M", progress=False, timeout=TIMEOUT, retries=0)
    assert not cached(tmp_path).exists()


def test_an_oversized_config_is_refused(server, hub, tmp_path):
    server.files[CONFIG] = b" " * (2 << 20)
    with pytest.raises(ChecksumError, match="expected at most 1,048,576 bytes"):
        download_gpt2("355M", progress=False, timeout=TIMEOUT, retries=0)


def test_a_damaged_cached_file_says_how_to_fetch_it_again(server, hub, tmp_path):
    download_gpt2("355M", progress=False, timeout=TIMEOUT)
    cached(tmp_path).write_bytes(cached(tmp_path).read_bytes()[:-100])
    with pytest.raises(WeightsError) as info:
        load_gpt2("355M", progress=False)
    for part in ("past the end", "tinygpt download gpt2-medium", "force=True",
                 str(cached(tmp_path).parent)):
        assert part in str(info.value)
    download_gpt2("355M", progress=False, timeout=TIMEOUT, force=True)
    ids = np.arange(10)[None, :]
    with tinygpt.no_grad():
        np.testing.assert_array_equal(load_gpt2("355M", progress=False)(ids).data, hub(ids).data)


def test_download_gpt2_refuses_a_lying_safetensors(server, hub, tmp_path):
    path = "/gpt2-medium/resolve/main/model.safetensors"
    server.files[path] = server.files[path][:-100]  # truncated: the header now lies
    with pytest.raises(ChecksumError, match="past the end|trailing"):
        download_gpt2("gpt2-medium", progress=False, timeout=TIMEOUT, retries=0)
    target = tmp_path / "home" / "models" / "gpt2-medium"
    assert not (target / "model.safetensors").exists()
    assert not (target / "model.safetensors.part").exists()


def test_pinned_size_of_gpt2_small_is_enforced(server, hub, tmp_path, monkeypatch):
    entry = {**dl.GPT2_MODELS["gpt2-small (124M)"], **SIZES}  # size/sha256 kept
    monkeypatch.setitem(dl.GPT2_MODELS, "gpt2-small (124M)", entry)
    for name in ("config.json", "model.safetensors"):
        server.files[f"/gpt2/resolve/main/{name}"] = server.files[f"/gpt2-medium/resolve/main/{name}"]
    with pytest.raises(ChecksumError, match="548,105,171"):  # the recorded size of the real file
        download_gpt2("gpt2-small (124M)", progress=False, timeout=TIMEOUT)
    entry["size"] = len(server.files["/gpt2/resolve/main/model.safetensors"])  # right size ...
    with pytest.raises(ChecksumError, match=entry["sha256"]):  # ... but not the recorded bytes
        download_gpt2("gpt2-small (124M)", progress=False, timeout=TIMEOUT)
    assert not (tmp_path / "home" / "models" / "gpt2" / "model.safetensors").exists()


def test_model_names():
    for name in ("gpt2-small (124M)", "124M", "gpt2", "GPT2-Small", "openai-community/gpt2"):
        assert dl.resolve_model_name(name) == "gpt2-small (124M)"
    for name, canonical in [("355M", "gpt2-medium (355M)"), ("gpt2-large", "gpt2-large (774M)"),
                            ("1558M", "gpt2-xl (1558M)"), ("gpt2-xl (1558M)", "gpt2-xl (1558M)")]:
        assert dl.resolve_model_name(name) == canonical
    assert dl.resolve_model_name("gpt3") is None
    assert dl.gpt2_urls("gpt2-xl", "https://huggingface.co")["model.safetensors"] == \
        "https://huggingface.co/gpt2-xl/resolve/main/model.safetensors"
    with pytest.raises(ValueError, match="gpt2-small \\(124M\\)"):
        download_gpt2("gpt3")


def test_example_offline_says_what_to_download(tmp_path):
    """No cached weights and no network: a clear message, exit code 1, no traceback."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint = f"http://127.0.0.1:{srv.server_address[1]}"
    srv.server_close()
    script = Path(__file__).resolve().parents[1] / "examples" / "ch05_gpt2_generate.py"
    env = {**os.environ, "TINYGPT_HOME": str(tmp_path / "home"), "TINYGPT_HF_ENDPOINT": endpoint}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False,
                         timeout=120, env=env)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "one-time download" in run.stderr
    assert f"{endpoint}/gpt2/resolve/main/model.safetensors" in run.stderr
    assert str(tmp_path / "home" / "models" / "gpt2") in run.stderr
