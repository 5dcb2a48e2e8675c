"""`tinygpt quantize`: a Qwen3 or Llama 3 model saved with 8-bit (q8) weights, as a Hugging Face
folder that `load_pretrained`, generate, chat and serve read as q8 without quantizing again.

The folder holds the source's config.json and tokenizer files, and model.safetensors with each
Linear/Embedding weight as int8 (I8) under its Hugging Face name plus its scales (F32, one per
block of 32) under `name + ".q8_scales"`; norms stay F32. Its metadata says
`tinygpt_quantization: q8`. Other tools do not read this layout (it is not GGUF)."""
import shutil
from pathlib import Path

from . import command


@command("quantize", "save a Qwen3 / Llama 3 model with 8-bit (q8) weights, about a quarter of "
                     "float32's size, for generate / chat / serve")
def _quantize(sub):
    sub.add_argument("--model", required=True, help="a Qwen3/Llama 3 Hugging Face folder or Hub name")
    sub.add_argument("--out", required=True, help="the folder to write (created)")
    sub.add_argument("--quantize", default="q8", help="the format: q8 (the one supported)")

    def run(args):
        out = save_quantized(args.model, args.out, args.quantize)
        size = (out / "model.safetensors").stat().st_size
        print(f"wrote {out} ({size / 1e6:.1f} MB of {args.quantize} weights)")
    return run


def save_quantized(source, out, fmt: str = "q8") -> Path:
    """Load `source` quantized to `fmt` and write it to the folder `out`; returns the folder."""
    from ..quant import SCALES, QuantError, quantized_tensors, weights_format
    from ..weights import load_pretrained
    from ..weights.hf import MODELS, expected_shapes
    from ..weights.safetensors_io import save_safetensors
    from .models import _hf_folder, _model_type
    weights_format(quantize=fmt)  # a bad format is refused before anything loads
    folder = _hf_folder(source)
    if folder is None:
        raise QuantError(f"tinygpt quantize writes Qwen3 and Llama 3 models; {source} is not one "
                         f"(GPT-2 and tinygpt checkpoints: use --quantize q8 on generate or chat)")
    model = load_pretrained(folder, quantize=fmt)
    norm = MODELS[_model_type(folder)][1]
    hf_of = {book: hf for hf, (book, _) in expected_shapes(
        {**model.cfg, "tie_weights": model.weights_tied}, norm).items()}
    tensors = {}
    for name, array in quantized_tensors(model).items():
        book, scales = (name[:-len(SCALES)], SCALES) if name.endswith(SCALES) else (name, "")
        tensors[hf_of[book] + scales] = array
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():  # config and tokenizer files, not the float weights
        if item.is_file() and not item.name.startswith("model.safetensors") and item.suffix != ".safetensors":
            shutil.copy(item, out / item.name)
    if (folder / "original").is_dir() and not (out / "original").exists():
        shutil.copytree(folder / "original", out / "original",
                        ignore=shutil.ignore_patterns("*.pth", "*.safetensors"))
    save_safetensors(tensors, out / "model.safetensors",
                     metadata={"format": "pt", "tinygpt_quantization": fmt})
    return out
