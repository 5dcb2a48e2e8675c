"""Models by Hub name (`load_pretrained("owner/name")`, `download_model`) against a fake Hub on
127.0.0.1 that each test starts and stops. It answers as the Hub does: a HEAD on
/<repo>/resolve/main/<file> is a 302 to /cdn/<file> with X-Linked-Etag/X-Linked-Size for a
large (LFS) file, a 200 with the git blob id as ETag for a small one, 404 for a file the
repository lacks, 401/403 for a gated repository without the right bearer token. Checked: a
sharded Qwen3 with its tokenizer, offline once cached, resume of a cut download, a file that is
not what the Hub announced, and refused access with the message saying what to do."""
import hashlib
import json
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest

from local_http import local_server
from modern_models import TINY_LLAMA, TINY_QWEN3
from tinygpt import manual_seed
from tinygpt.errors import TinyGPTError
from tinygpt.model import Llama3Model, Qwen3Model
from tinygpt.weights import (AccessRefusedError, ChecksumError, DownloadError, download_model,
                             load_pretrained, load_safetensors, save_pretrained_hf,
                             save_safetensors)
from tokenizer_files import write_qwen3_tokenizer_json

REPO = "acme/tiny-qwen3"
TIMEOUT = 5.0


class FakeHub(BaseHTTPRequestHandler):
    def _check(self):
        srv = self.server
        auth = self.headers.get("Authorization")
        srv.log.append((self.command, self.path, auth, self.headers.get("Range")))
        if self.path.startswith("/cdn/"):
            return self.path[len("/cdn/"):]
        prefix = f"/{srv.repo}/resolve/main/"
        name = self.path[len(prefix):] if self.path.startswith(prefix) else None
        if srv.token and auth != f"Bearer {srv.token}":
            self.send_error(403 if auth else 401)
        elif name not in srv.files:
            self.send_error(404)
        else:
            return name
        return None

    def do_HEAD(self):
        name = self._check()
        if name is None:
            return
        srv, data = self.server, self.server.files[name]
        if name.endswith(".safetensors"):
            announced = srv.lie.get(name, data)
            self.send_response(302)
            self.send_header("Location", "/cdn/" + name)
            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(announced).hexdigest()}"')
            self.send_header("X-Linked-Size", str(len(announced)))
        else:
            self.send_response(200)
            blob = hashlib.sha1(b"blob %d\0" % len(data) + srv.lie.get(name, data)).hexdigest()
            self.send_header("ETag", f'"{blob}"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        name = self._check()
        if name is None:
            return
        srv, data = self.server, self.server.files[name]
        start = 0
        if (r := self.headers.get("Range")) and r.startswith("bytes="):
            start = int(r[len("bytes="):-1])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        cut = srv.cut.pop(name, None)
        self.wfile.write(data[start:] if cut is None else data[start:start + cut])
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    with local_server(FakeHub, TIMEOUT, repo=REPO, files={}, lie={}, cut={}, log=[],
                      token=None) as srv:
        yield srv


@pytest.fixture(scope="module")
def sharded_qwen3(tmp_path_factory):
    """A tiny random Qwen3 in two shards + index, its tokenizer.json, and the model itself."""
    manual_seed(0)
    model = Qwen3Model(dict(TINY_QWEN3, vocab_size=320)).eval()
    folder = save_pretrained_hf(model, tmp_path_factory.mktemp("qwen3"))
    tensors = load_safetensors(folder / "model.safetensors")
    names = sorted(tensors)
    files, weight_map = {}, {}
    for k, part in enumerate((names[::2], names[1::2])):
        shard = f"model-0000{k + 1}-of-00002.safetensors"
        save_safetensors({n: tensors[n] for n in part}, folder / shard, metadata={"format": "pt"})
        files[shard] = (folder / shard).read_bytes()
        weight_map.update({n: shard for n in part})
    files["model.safetensors.index.json"] = json.dumps({"weight_map": weight_map}).encode()
    files["config.json"] = (folder / "config.json").read_bytes()
    files["tokenizer.json"] = write_qwen3_tokenizer_json(folder / "tokenizer.json").read_bytes()
    return files, model


def same_logits(a, b):
    ids = np.array([[1, 5, 7, 30, 2]])
    np.testing.assert_array_equal(a(ids).data, b(ids).data)


def get(hub, tmp_path, **kw):
    return download_model(REPO, cache_dir=tmp_path, endpoint=hub.url, progress=False,
                          timeout=TIMEOUT, **kw)


def test_sharded_model_by_name_then_offline(hub, tmp_path, sharded_qwen3):
    hub.files, model = sharded_qwen3
    loaded = load_pretrained(REPO, cache_dir=tmp_path, endpoint=hub.url, progress=False)
    assert isinstance(loaded, Qwen3Model)
    same_logits(loaded, model)
    folder = tmp_path / "models" / REPO
    for name, data in hub.files.items():
        assert (folder / name).read_bytes() == data
    assert ("GET", "/cdn/model-00001-of-00002.safetensors", None, None) in hub.log
    hub.log.clear()
    dead = "http://127.0.0.1:9"  # nothing listens there: a cached model needs no network
    same_logits(load_pretrained(REPO, cache_dir=tmp_path, endpoint=dead, progress=False), model)
    assert hub.log == []


def test_single_file_model_without_tokenizer(hub, tmp_path):
    manual_seed(1)
    model = Llama3Model(TINY_LLAMA).eval()
    folder = save_pretrained_hf(model, tmp_path / "src")
    hub.files = {n: (folder / n).read_bytes() for n in ("config.json", "model.safetensors")}
    target = get(hub, tmp_path)
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith(".")) == \
        ["config.json", "model.safetensors"]
    same_logits(load_pretrained(target), model)


def test_cut_download_resumes_on_the_next_run(hub, tmp_path, sharded_qwen3):
    hub.files, model = sharded_qwen3
    shard = "model-00002-of-00002.safetensors"
    hub.cut[shard] = 1000
    with pytest.raises(DownloadError, match="run again to resume"):
        get(hub, tmp_path, retries=0)
    assert (tmp_path / "models" / REPO / (shard + ".part")).stat().st_size == 1000
    same_logits(load_pretrained(get(hub, tmp_path)), model)
    assert ("GET", "/cdn/" + shard, None, "bytes=1000-") in hub.log


@pytest.mark.parametrize("name", ["model-00001-of-00002.safetensors", "tokenizer.json"])
def test_a_file_that_is_not_the_announced_one_is_refused(hub, tmp_path, sharded_qwen3, name):
    hub.files, _ = sharded_qwen3
    hub.lie[name] = hub.files[name][:-1] + b"!"
    with pytest.raises(ChecksumError, match="sha256|blob id"):
        get(hub, tmp_path)
    folder = tmp_path / "models" / REPO
    assert not (folder / name).exists() and not (folder / (name + ".part")).exists()
    with pytest.raises(DownloadError):  # not cached: a later call asks the Hub again
        get(hub, tmp_path)


def test_refused_access_says_what_to_do(hub, tmp_path, sharded_qwen3, monkeypatch):
    hub.files, model = sharded_qwen3
    hub.token = "hf_secret"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(AccessRefusedError) as info:
        get(hub, tmp_path)
    message = str(info.value)
    assert isinstance(info.value, TinyGPTError) and "HTTP 401" in message
    assert REPO in message and "HF_TOKEN" in message and f"{hub.url}/{REPO}" in message
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(AccessRefusedError, match="HTTP 403.*with the token in HF_TOKEN"):
        get(hub, tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    same_logits(load_pretrained(get(hub, tmp_path)), model)
    cdn = [auth for _, path, auth, _ in hub.log if path.startswith("/cdn/")]
    assert cdn and all(auth is None for auth in cdn)  # the token stays with the Hub


def test_unknown_repository_is_named(hub, tmp_path):
    with pytest.raises(DownloadError, match=f"HTTP 404: {REPO} has no config.json"):
        get(hub, tmp_path)


def test_cli_download_by_repository_id(hub, tmp_path, sharded_qwen3):
    import os
    import subprocess
    import sys
    hub.files, _ = sharded_qwen3
    env = {**os.environ, "TINYGPT_HF_ENDPOINT": hub.url, "TINYGPT_HOME": str(tmp_path)}
    env.pop("HF_TOKEN", None)
    out = subprocess.run([sys.executable, "-m", "tinygpt", "download", REPO], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "models" / REPO)
    assert (tmp_path / "models" / REPO / "tokenizer.json").read_bytes() == hub.files["tokenizer.json"]
    hub.token = "hf_secret"  # refused access: one line, exit status 2
    out = subprocess.run([sys.executable, "-m", "tinygpt", "download", REPO, "--force"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "HF_TOKEN" in out.stderr


@pytest.mark.parametrize("shard", ["../../escape.safetensors", "sub/model.safetensors", 7])
def test_an_index_naming_a_file_outside_the_folder_is_refused_before_any_shard(hub, tmp_path,
                                                                               sharded_qwen3, shard):
    files, _ = sharded_qwen3
    weight_map = json.loads(files["model.safetensors.index.json"])["weight_map"]
    name = sorted(weight_map)[0]
    hub.files = {**files, "model.safetensors.index.json":
                 json.dumps({"weight_map": {**weight_map, name: shard}}).encode()}
    with pytest.raises(DownloadError, match=rf"weight_map\['{name}'\] must be a \.safetensors file "
                                            rf"name in the folder, got .*download --force"):
        get(hub, tmp_path)
    assert not any(entry[1].endswith(".safetensors") for entry in hub.log), hub.log
    assert not (tmp_path / "escape.safetensors").exists()
