"""Weights in and out of tinygpt (book section 5.5): GPT-2 from the Hugging Face Hub or local
files (safetensors, or PyTorch .pth read without torch), and `save_pretrained` back to the
Hugging Face layout. Modules: `safetensors_io` (validated reader/atomic writer), `torch_pickle`
(restricted unpickler), `claims` (every config value checked by type and range, and the sizes a
config claims against the tensor headers, before anything is built), `gpt2` (the name-mapping
table), `download` (resumable, checked against what the Hub announces; the one HEAD client
for the Hub), `hub` (any model repository by name, `HF_TOKEN` for gated ones), `hf`
(`load_pretrained`: any supported Hugging Face directory or Hub name, GPT-2, Qwen3 or Llama, by
its config's model_type)."""
from .download import (GPT2_MODELS, ChecksumError, DownloadError, cache_home, download_file,
                       download_gpt2, gpt2_dir, gpt2_urls, is_gpt2_cached, resolve_model_name)
from .gpt2 import HF_TO_BOOK, WeightsError, load_gpt2, save_pretrained
from .hf import load_pretrained, save_pretrained_hf
from .hub import AccessRefusedError, cached_model, download_model, is_repo_id, model_dir
from .safetensors_io import SafetensorsError, load_safetensors, save_safetensors
from .torch_pickle import TorchFileError, UnsafePickleError, load_torch_state_dict

__all__ = ["GPT2_MODELS", "HF_TO_BOOK", "AccessRefusedError", "ChecksumError", "cached_model",
           "download_model", "is_repo_id", "model_dir", "DownloadError", "SafetensorsError",
           "TorchFileError", "UnsafePickleError", "WeightsError", "cache_home", "download_file",
           "download_gpt2", "gpt2_dir", "gpt2_urls", "is_gpt2_cached", "load_gpt2", "load_pretrained", "save_pretrained_hf",
           "load_safetensors", "load_torch_state_dict", "resolve_model_name", "save_pretrained",
           "save_safetensors"]
