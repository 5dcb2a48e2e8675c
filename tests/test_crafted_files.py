"""Crafted weight files (each built here, under 1 MB) are refused with a tinygpt error that names
the file and the tensor or record, in well under a second and without the memory they describe:
peak RSS is measured in a fresh process around the one load call."""
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tinygpt.errors import InputError, TinyGPTError
from tinygpt.weights import SafetensorsError, load_gpt2, load_safetensors, load_torch_state_dict
from tinygpt.weights.torch_pickle import TorchFileError

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
PEAK_MB, SECONDS = 200, 1.0
MEASURE = """
import resource, sys, time
from tinygpt.errors import TinyGPTError
from tinygpt.weights import load_gpt2
kwargs = eval(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    load_gpt2(sys.argv[1], **kwargs)
    print("LOADED")
except TinyGPTError as e:
    print("REFUSED", type(e).__name__, e)
seconds = time.perf_counter() - start
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(f"STATS {seconds} {grown}")
"""


def refused_cheaply(path, **kwargs):
    """Load `path` with load_gpt2 in a fresh process; assert it was refused within SECONDS with
    peak RSS growth under PEAK_MB; return the error line."""
    assert path.stat().st_size < 1 << 20
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # this checkout, not the installed copy
    run = subprocess.run([sys.executable, "-c", MEASURE, str(path), repr(kwargs)], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    seconds, grown_mb = map(float, lines[-1].split()[1:])
    assert lines[0].startswith("REFUSED"), lines
    assert seconds < SECONDS and grown_mb < PEAK_MB, (seconds, grown_mb, lines[0])
    return lines[0]


def write_pth(path, pickle_bytes: bytes, records=None, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compress) as zf:
        zf.writestr("archive/data.pkl", pickle_bytes)
        for key, raw in (records or {}).items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


# --- memory: each file describes gigabytes ----------------------------------------------------
def test_stride_zero_tensor_is_refused_without_expanding(tmp_path):
    """One float stored, a 30000 x 30000 tensor described: 3.6 GB if copied."""
    torch.save({"tok_emb.weight": torch.zeros(1).expand(30000, 30000)}, tmp_path / "s0.pth")
    with pytest.raises(TorchFileError, match=r"'tok_emb.weight' of size \(30000, 30000\) has stride \(0, 0\)"):
        load_torch_state_dict(tmp_path / "s0.pth")
    assert "tok_emb.weight" in refused_cheaply(tmp_path / "s0.pth")


def test_zip_bomb_pickle_is_refused_before_it_inflates(tmp_path):
    """A 200 KB zip whose data.pkl inflates to 256 MB."""
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("archive/data.pkl", "w") as f:
            f.write(pickle.dumps({}, protocol=2))
            for _ in range(256):
                f.write(bytes(1 << 20))
    with pytest.raises(TorchFileError, match="archive/data.pkl is compressed.*zip bomb"):
        load_torch_state_dict(path)
    refused_cheaply(path)


def test_pickle_memo_index_is_refused_before_the_unpickler_allocates(tmp_path):
    """10 bytes of pickle asking the C unpickler for memo slot 2**27 (a 2 GB table)."""
    data = b"\x80\x02)r" + (1 << 27).to_bytes(4, "little") + b"."
    path = write_pth(tmp_path / "memo.pth", data)
    with pytest.raises(TorchFileError, match="memo slot 134217728"):
        load_torch_state_dict(path)
    refused_cheaply(path)


def test_many_views_of_one_storage_cost_one_storage(tmp_path):
    """4000 transposed views of one 256 KB storage: 1 GB if each were copied. They load, as
    read-only views sharing the storage."""
    base = torch.arange(256 * 256, dtype=torch.float32).reshape(256, 256)
    torch.save({f"t{i}": base.t() for i in range(4000)}, tmp_path / "views.pth")
    got = load_torch_state_dict(tmp_path / "views.pth")
    np.testing.assert_array_equal(got["t3999"], base.t().numpy())
    assert np.shares_memory(got["t0"], got["t3999"])
    refused_cheaply(tmp_path / "views.pth")  # no GPT-2 names: refused, after loading cheaply


def test_shared_and_cyclic_containers_are_walked_once(tmp_path):
    """A list shared at each of 100 levels (2**100 paths to walk naively) and one holding itself,
    with an expanded tensor at the bottom: found, named by its first path, refused at once."""
    deep = [torch.zeros(1).expand(1000, 1000)]
    for _ in range(100):
        deep = [deep, deep]
    loop = []
    loop.append(loop)
    torch.save({"deep": deep, "loop": loop}, tmp_path / "dag.pth")
    with pytest.raises(TorchFileError, match=r"tensor 'deep(\[1\]){100}\[0\]' of size \(1000, 1000\)"):
        load_torch_state_dict(tmp_path / "dag.pth")
    refused_cheaply(tmp_path / "dag.pth")


def test_book_names_are_checked_before_the_model_is_built(tmp_path):
    """A few KB naming 48 blocks of a 768-wide model: building it first would take 1.4 GB."""
    sd = {"tok_emb.weight": torch.zeros(4, 768), "pos_emb.weight": torch.zeros(2, 768)}
    sd.update({f"trf_blocks.{i}.norm1.scale": torch.ones(1) for i in range(48)})
    torch.save(sd, tmp_path / "blocks.pth")
    line = refused_cheaply(tmp_path / "blocks.pth")
    assert "trf_blocks.0.norm1.scale has shape (1,) but the config implies (768,)" in line
    assert "missing: trf_blocks.0.norm1.shift" in line


def test_safetensors_claiming_huge_shapes_is_refused(tmp_path):
    header = json.dumps({"wte.weight": {"dtype": "F32", "shape": [200000, 200000],
                                        "data_offsets": [0, 4 * 200000 ** 2]}}).encode()
    path = tmp_path / "huge.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(64))
    with pytest.raises(SafetensorsError, match="'wte.weight'.*past the end"):
        load_safetensors(path)
    refused_cheaply(path)


# --- malformed files are tinygpt errors, never other tracebacks --------------------------------
def _safetensors(path, header_text: str) -> Path:
    raw = header_text.encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    return path


@pytest.mark.parametrize("header, message", [
    ("[" * 100_000 + "]" * 100_000, "RecursionError"),
    ('{"a": {"dtype": "F32", "shape": [' + "9" * 5000 + '], "data_offsets": [0, 0]}}', "ValueError"),
    ('{"a": {"dtype": "F32", "shape": [' + ",".join(["0"] * 65) + '], "data_offsets": [0, 0]}}',
     "65 dimensions"),
    ('{"a": {"dtype": "F32", "shape": [0, 4611686018427387904], "data_offsets": [0, 0]}}',
     "larger than any array"),
])
def test_crafted_safetensors_headers(tmp_path, header, message):
    path = _safetensors(tmp_path / "x.safetensors", header)
    with pytest.raises(SafetensorsError, match=message) as info:
        load_safetensors(path)
    assert str(path) in str(info.value)


def test_corrupt_zip_is_an_input_error(tmp_path):
    torch.save({"w": torch.arange(1000, dtype=torch.float32)}, tmp_path / "ok.pth")
    raw = bytearray((tmp_path / "ok.pth").read_bytes())
    at = raw.index(np.arange(1000, dtype=np.float32).tobytes()[400:408])
    raw[at:at + 8] = bytes(8)  # the tensor bytes no longer match the record's CRC
    (tmp_path / "crc.pth").write_bytes(bytes(raw))
    message = r"crc\.pth is a damaged zip archive: record ok/data/0 cannot be read \(BadZipFile"
    with pytest.raises(TorchFileError, match=message):
        load_torch_state_dict(tmp_path / "crc.pth")


def _central_entry(raw: bytearray, name: str) -> int:
    """Offset of `name`'s central-directory header in the zip bytes `raw`."""
    at = 0
    while True:
        at = raw.index(b"PK\x01\x02", at)
        length = int.from_bytes(raw[at + 28:at + 30], "little")
        if raw[at + 46:at + 46 + length] == name.encode():
            return at
        at += 4


@pytest.mark.parametrize("damage, error", [
    ("compression method 99", "NotImplementedError: That compression method is not supported"),
    ("encrypted", "RuntimeError: File 'ok/data/0' is encrypted"),
    ("corrupt deflate stream", "error: Error -3 while decompressing"),  # zlib.error
])
def test_every_way_zipfile_refuses_a_record_is_an_input_error(tmp_path, damage, error):
    """The exceptions other than BadZipFile that zipfile raises while reading a record (the
    reasons torch_pickle.ZIP_ERRORS lists them) become one TorchFileError naming file and record."""
    torch.save({"w": torch.arange(1000, dtype=torch.float32)}, tmp_path / "ok.pth")
    src = zipfile.ZipFile(tmp_path / "ok.pth")
    with zipfile.ZipFile(tmp_path / "bad.pth", "w") as dst:  # the tensor record deflated
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename),
                         zipfile.ZIP_DEFLATED if info.filename == "ok/data/0" else zipfile.ZIP_STORED)
    raw = bytearray((tmp_path / "bad.pth").read_bytes())
    entry = _central_entry(raw, "ok/data/0")
    if damage == "compression method 99":
        raw[entry + 10:entry + 12] = (99).to_bytes(2, "little")
    elif damage == "encrypted":
        raw[entry + 8:entry + 10] = (1).to_bytes(2, "little")    # flag bit 0: encrypted
    else:
        local = int.from_bytes(raw[entry + 42:entry + 46], "little")
        start = local + 30 + int.from_bytes(raw[local + 26:local + 28], "little") \
            + int.from_bytes(raw[local + 28:local + 30], "little")
        raw[start:start + 4] = b"\xff" * 4                       # an invalid deflate block type
    (tmp_path / "bad.pth").write_bytes(bytes(raw))
    with pytest.raises(TorchFileError, match=rf"bad\.pth is a damaged zip archive: record ok/data/0 "
                                              rf"cannot be read \({error}"):
        load_torch_state_dict(tmp_path / "bad.pth")


@pytest.mark.parametrize("pickled, message", [
    (b"\x80\x02ctorch\nFloatStorage\n)R.", "not a state dict torch.save writes"),  # called
    (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(K\x01K\x00))tR.", "expects a storage"),
    (b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01", "not a valid pickle"),  # truncated
])
def test_crafted_pickles_are_tinygpt_errors(tmp_path, pickled, message):
    path = write_pth(tmp_path / "p.pth", pickled)
    with pytest.raises(TinyGPTError, match=message):
        load_torch_state_dict(path)


def test_tensor_geometry_outside_the_storage_names_the_record(tmp_path):
    t = torch.arange(6, dtype=torch.float32)
    torch.save({"w": t}, tmp_path / "ok.pth")
    raw = zipfile.ZipFile(tmp_path / "ok.pth").read("ok/data.pkl")
    bad = raw.replace(b"K\x06\x85", b"K\x07\x85")  # size (6,) -> (7,): one past the storage
    assert bad != raw
    path = write_pth(tmp_path / "geo.pth", bad, {"0": t.numpy().tobytes()})
    with pytest.raises(TorchFileError, match=r"size \(7,\).*storage archive/data/0"):
        load_torch_state_dict(path)


def test_compressed_torch_file_within_the_limit_still_loads(tmp_path):
    """A small file re-zipped with deflate is no bomb: it loads."""
    torch.save({"w": torch.arange(12.0).reshape(3, 4)}, tmp_path / "ok.pth")
    src = zipfile.ZipFile(tmp_path / "ok.pth")
    with zipfile.ZipFile(tmp_path / "deflated.pth", "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    np.testing.assert_array_equal(load_torch_state_dict(tmp_path / "deflated.pth")["w"],
                                  np.arange(12.0, dtype=np.float32).reshape(3, 4))


def test_config_json_errors_name_the_file(tmp_path):
    torch.save({"w": torch.ones(1)}, tmp_path / "m.pth")
    for text in ("{not json", "[" * 100_000, "[1, 2]"):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(InputError, match=r"config\.json"):
            load_gpt2(tmp_path / "m.pth", config=tmp_path / "config.json")
    (tmp_path / "config.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(InputError, match=r"config\.json is not a valid JSON config \(UnicodeDecodeError"):
        load_gpt2(tmp_path / "m.pth", config=tmp_path / "config.json")
