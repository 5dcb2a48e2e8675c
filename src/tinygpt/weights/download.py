"""The GPT-2 files on the Hugging Face Hub (the download itself is `tinygpt.data.download`).

`download_gpt2(name)` fetches config.json + model.safetensors of one GPT-2 size into
`$TINYGPT_HOME/models/<repo>/` (default `~/.cache/tinygpt/models/<repo>/`) from
`$TINYGPT_HF_ENDPOINT` (default https://huggingface.co; tests point it at 127.0.0.1).

What enters the cache is checked as the Hub's own client checks it: the sha256 and size of
model.safetensors are the recorded ones, or else those the Hub announces for the file (a HEAD
request on its resolve URL, not following the redirect, answers with `X-Linked-Etag: "<sha256>"`
and `X-Linked-Size`; `hub_head` makes that request, for `hub.py` too); and before the file is
moved into the cache its tensor names and shapes must be those of the named size (config.json
likewise).
"""
import os
import re
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path


from ..data.download import (ChecksumError, DownloadError, cache_home, download_file,  # noqa: F401
                             sha256_file)
from ..errors import InputError

MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few hundred bytes

DEFAULT_ENDPOINT = "https://huggingface.co"

# The four GPT-2 sizes as published on the Hub. `sha256`/`size` of model.safetensors are the
# Hub's LFS values. Only gpt2 (124M) is recorded: size 548,105,171 and its sha256 agree across
# independent public records of the file. For the other sizes no value could be confirmed
# offline, so none is recorded (a wrong pin would refuse a good file); their download is checked
# against the sha256 and size the Hub announces (`hub_file_info`), and for every size the
# tensor names and shapes must be the named size's before the file enters the cache.
GPT2_MODELS = {
    "gpt2-small (124M)": {"repo": "gpt2", "dims": (768, 12, 12), "approx_mb": 548,
                          "aliases": ("124m", "gpt2", "gpt2-small", "small", "openai-community/gpt2"),
                          "sha256": "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707",
                          "size": 548_105_171},
    "gpt2-medium (355M)": {"repo": "gpt2-medium", "dims": (1024, 24, 16), "approx_mb": 1520,
                           "aliases": ("355m", "gpt2-medium", "medium", "openai-community/gpt2-medium"),
                           "sha256": None, "size": None},
    "gpt2-large (774M)": {"repo": "gpt2-large", "dims": (1280, 36, 20), "approx_mb": 3250,
                          "aliases": ("774m", "gpt2-large", "large", "openai-community/gpt2-large"),
                          "sha256": None, "size": None},
    "gpt2-xl (1558M)": {"repo": "gpt2-xl", "dims": (1600, 48, 25), "approx_mb": 6430,
                        "aliases": ("1558m", "1.5b", "gpt2-xl", "xl", "openai-community/gpt2-xl"),
                        "sha256": None, "size": None},
}


for _info in GPT2_MODELS.values():  # all four share GPT-2's vocabulary and context length
    _info.update(vocab_size=50257, n_positions=1024)


def hf_endpoint(endpoint: str = None) -> str:
    return (endpoint or os.environ.get("TINYGPT_HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def resolve_model_name(name) -> str | None:
    """The canonical name ("gpt2-small (124M)", ...) for any accepted spelling, else None."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    for canonical, info in GPT2_MODELS.items():
        if key == canonical.lower() or key in info["aliases"]:
            return canonical
    return None


def gpt2_dir(name: str, cache_dir=None) -> Path:
    """Where `download_gpt2(name)` puts (or finds) config.json and model.safetensors."""
    canonical = _canonical(name)
    return Path(cache_dir or cache_home()).expanduser() / "models" / GPT2_MODELS[canonical]["repo"]


def gpt2_urls(name: str, endpoint: str = None) -> dict:
    """{file name: URL} for one GPT-2 size."""
    repo = GPT2_MODELS[_canonical(name)]["repo"]
    return {f: f"{hf_endpoint(endpoint)}/{repo}/resolve/main/{f}"
            for f in ("config.json", "model.safetensors")}


def is_gpt2_cached(name: str, cache_dir=None) -> bool:
    d = gpt2_dir(name, cache_dir)
    return (d / "config.json").exists() and (d / "model.safetensors").exists()


def download_gpt2(name: str, cache_dir=None, endpoint: str = None, progress: bool = True,
                  force: bool = False, **options) -> Path:
    """Fetch one GPT-2 size (any spelling `resolve_model_name` accepts) into the cache, once
    (`force=True` fetches it again, replacing the cached files once the new ones verify).
    Returns the directory holding config.json and model.safetensors (the Hugging Face layout
    that `load_gpt2` reads). `options` go to `download_file` (timeout, retries)."""
    canonical = _canonical(name)
    info = GPT2_MODELS[canonical]
    target, urls = gpt2_dir(canonical, cache_dir), gpt2_urls(canonical, endpoint)
    download_file(urls["config.json"], target / "config.json", progress=False, force=force,
                  max_bytes=MAX_CONFIG_BYTES, validate=lambda p: _check_config(p, info), **options)
    weights = target / "model.safetensors"
    sha256, size = info["sha256"], info["size"]
    if sha256 is None and (force or not weights.exists()):  # cached: no network needed
        sha256, size = hub_file_info(urls["model.safetensors"], options.get("timeout", 30.0))
    download_file(urls["model.safetensors"], weights, sha256, size, progress=progress,
                  validate=lambda p: _check_tensors(p, info), force=force,
                  desc=f"{canonical} model.safetensors", **options)
    return target


def hub_file_info(url: str, timeout: float = 30.0) -> tuple:
    """(sha256, size) the Hub announces for the LFS file at `url`, each None if not announced
    (or if the server answers with an error: the GET that follows reports it)."""
    status, headers = hub_head(url, timeout=timeout)
    return linked_file_info(headers) if status < 400 else (None, None)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the 3xx answer itself holds the headers


def hub_head(url: str, headers: dict = None, timeout: float = 30.0, hint: str = "") -> tuple:
    """(status, headers) of a HEAD request on a Hub resolve URL, not following the redirect, as
    `huggingface_hub` makes it: the Hub's one HEAD client (`hub.py` uses it for every file). An
    HTTP error status is returned, not raised; a network failure is a DownloadError naming the
    URL (plus `hint`)."""
    request = urllib.request.Request(url, method="HEAD", headers={
        "User-Agent": "tinygpt", "Accept-Encoding": "identity", **(headers or {})})
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout) as resp:
            return resp.status, resp.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers
    except (urllib.error.URLError, OSError, HTTPException) as e:
        raise DownloadError(f"could not reach {url}: {getattr(e, 'reason', e)} (offline, or the "
                            f"server is down?){hint}") from None


def linked_file_info(headers) -> tuple:
    """(sha256, size) of a large (LFS) file from a HEAD answer's `X-Linked-Etag: "<sha256>"` and
    `X-Linked-Size: <bytes>`, each None when absent or malformed."""
    etag = (headers.get("X-Linked-Etag") or "").removeprefix("W/").strip('"').lower()
    size = headers.get("X-Linked-Size") or ""
    return (etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None,
            int(size) if size.isdigit() else None)


def _expected_cfg(info: dict) -> dict:
    """The book's cfg of one published GPT-2 size."""
    emb, layers, heads = info["dims"]
    return {"vocab_size": info["vocab_size"], "context_length": info["n_positions"],
            "emb_dim": emb, "n_layers": layers, "n_heads": heads, "drop_rate": 0.0,
            "qkv_bias": True}


def _check_config(path, info: dict) -> None:
    """A downloaded config.json must describe the named size."""
    from .claims import read_json_config
    hf = read_json_config(path)
    keys = ("n_embd", "n_layer", "n_head", "vocab_size", "n_positions")
    got, want = tuple(hf.get(k) for k in keys), info["dims"] + (info["vocab_size"], info["n_positions"])
    if got != want:
        raise InputError(f"({', '.join(keys)}) = {got}, expected {want}")


def _check_tensors(path, info: dict) -> None:
    """A downloaded model.safetensors must be well formed (its header describes every byte) and
    hold exactly the named size's tensors, by name and shape; read from the header alone."""
    from .gpt2 import BOOK_KEYS, check_shapes, strip_prefix
    from .safetensors_io import read_header
    entries, _, _ = read_header(path)
    check_shapes(strip_prefix({n: e["shape"] for n, e in entries.items()}), _expected_cfg(info),
                 claim=(f"{info['repo']} (the size asked for)", BOOK_KEYS))


def _canonical(name: str) -> str:
    canonical = resolve_model_name(name)
    if canonical is None:
        raise InputError(f"unknown GPT-2 model {name!r}; choose one of "
                         f"{', '.join(GPT2_MODELS)} (or 124M, 355M, 774M, 1558M, gpt2, "
                         f"gpt2-medium, gpt2-large, gpt2-xl)")
    return canonical
