"""The GPT-2 files on the Hugging Face Hub (the download itself is `tinygpt.data.download`).

`download_gpt2(name)` fetches config.json + model.safetensors of one GPT-2 size into
`$TINYGPT_HOME/models/<repo>/` (default `~/.cache/tinygpt/models/<repo>/`) from
`$TINYGPT_HF_ENDPOINT` (default https://huggingface.co; tests point it at 127.0.0.1).
"""
import json
import os
from pathlib import Path


from ..data.download import (ChecksumError, DownloadError, cache_home, download_file,  # noqa: F401
                             sha256_file)
from ..errors import InputError

DEFAULT_ENDPOINT = "https://huggingface.co"

# The four GPT-2 sizes as published on the Hub. `sha256`/`size` of model.safetensors are the
# Hub's LFS values. Only gpt2 (124M) is recorded: size 548,105,171 and its sha256 agree across
# independent public records of the file. For the other sizes no value could be confirmed
# offline, so none is recorded (a wrong pin would refuse a good file); their download is
# checked structurally instead (the safetensors header must describe the file's bytes exactly,
# config.json must name the right dimensions) and `load_gpt2` then checks every tensor shape.
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
                  **options) -> Path:
    """Fetch one GPT-2 size (any spelling `resolve_model_name` accepts) into the cache, once.
    Returns the directory holding config.json and model.safetensors (the Hugging Face layout
    that `load_gpt2` reads). `options` go to `download_file` (timeout, retries)."""
    canonical = _canonical(name)
    info = GPT2_MODELS[canonical]
    target, urls = gpt2_dir(canonical, cache_dir), gpt2_urls(canonical, endpoint)

    def check_config(path):
        hf = json.loads(Path(path).read_text())
        got = (hf.get("n_embd"), hf.get("n_layer"), hf.get("n_head"))
        if got != info["dims"]:
            raise InputError(f"(n_embd, n_layer, n_head) = {got}, expected {info['dims']}")

    def check_safetensors(path):
        from .safetensors_io import read_header  # the header must describe every byte
        read_header(path)

    download_file(urls["config.json"], target / "config.json", progress=False,
                  validate=check_config, **options)
    download_file(urls["model.safetensors"], target / "model.safetensors", info["sha256"],
                  info["size"], progress=progress, validate=check_safetensors,
                  desc=f"{canonical} model.safetensors", **options)
    return target


def _canonical(name: str) -> str:
    canonical = resolve_model_name(name)
    if canonical is None:
        raise InputError(f"unknown GPT-2 model {name!r}; choose one of "
                         f"{', '.join(GPT2_MODELS)} (or 124M, 355M, 774M, 1558M, gpt2, "
                         f"gpt2-medium, gpt2-large, gpt2-xl)")
    return canonical
