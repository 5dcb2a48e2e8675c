"""`tinygpt quantize`: a Qwen3 or Llama 3 model saved with 8-bit (q8) or bf16 weights, as a Hugging
Face folder that `load_pretrained`, generate, chat and serve read in that form as they are (no
quantizing or rounding again, no flag needed).

The folder holds the source's config.json and tokenizer files, and model.safetensors with each
Linear/Embedding weight under its Hugging Face name: q8 as int8 (I8) plus its scales (F32, one per
block of 32) under `name + ".q8_scales"`; bf16 as BF16. Norms stay F32. Its metadata says
`tinygpt_quantization: q8` or `bf16`. Other tools do not read the q8 layout (it is not GGUF); the
bf16 folder is an ordinary bf16 checkpoint (transformers reads it).

bf16 is asked for with `--dtype bf16`, the flag generate, chat and serve take for it, not
`--quantize bf16`: bf16 is a float type (each weight rounded to 8 bits of mantissa), with none
of q8's blocks and scales, and one spelling on every command is easier to remember."""
import shutil
from pathlib import Path

from . import command


@command("quantize", "save a Qwen3 / Llama 3 model with 8-bit (q8, the default) or bf16 weights, "
                     "about a quarter or a half of float32's size, for generate / chat / serve")
def _quantize(sub):
    sub.add_argument("--model", required=True, help="a Qwen3/Llama 3 Hugging Face folder or Hub name")
    sub.add_argument("--out", required=True, help="the folder to write (created)")
    sub.add_argument("--quantize", help="q8 (the default; the one 8-bit format)")
    sub.add_argument("--dtype", help="bf16: bfloat16 weights instead (half of float32)")

    def run(args):
        from ..quant import QuantError
        if args.quantize is not None and args.dtype is not None:
            raise QuantError("give --quantize q8 or --dtype bf16, not both")
        if args.dtype is not None and args.dtype.lower() not in ("bf16", "bfloat16"):
            raise QuantError(f"--dtype {args.dtype!r}: tinygpt quantize writes bf16 (or q8 with --quantize)")
        fmt = "bf16" if args.dtype is not None else args.quantize or "q8"
        out = save_quantized(args.model, args.out, fmt)
        size = (out / "model.safetensors").stat().st_size
        print(f"wrote {out} ({size / 1e6:.1f} MB of {fmt} weights)")
    return run


def save_quantized(source, out, fmt: str = "q8") -> Path:
    """Load `source` with its weights in `fmt` ("q8" or "bf16") and write it to the folder `out`;
    returns the folder."""
    from ..quant import SCALES, QuantError, quantized_tensors, weights_format
    from ..weights import load_pretrained
    from ..weights.hf import MODELS, expected_shapes
    from ..weights.safetensors_io import save_safetensors
    from .models import _hf_folder, _model_type
    asked = {"dtype": "bf16"} if fmt == "bf16" else {"quantize": fmt}
    weights_format(**asked)  # a bad format is refused before anything loads
    folder = _hf_folder(source)
    if folder is None:
        raise QuantError(f"tinygpt quantize writes Qwen3 and Llama 3 models; {source} is not one "
                         f"(GPT-2 and tinygpt checkpoints: use --quantize q8 or --dtype bf16 on "
                         f"generate or chat)")
    model = load_pretrained(folder, **asked)
    norm = MODELS[_model_type(folder)][1]
    hf_of = {book: hf for hf, (book, _) in expected_shapes(
        {**model.cfg, "tie_weights": model.weights_tied}, norm).items()}
    tensors, bits = {}, set()
    for name, array in quantized_tensors(model).items():
        book, scales = (name[:-len(SCALES)], SCALES) if name.endswith(SCALES) else (name, "")
        tensors[hf_of[book] + scales] = array
        if fmt == "bf16" and array.ndim == 2:   # the QuantWeights' bits; norms stay F32
            bits.add(hf_of[book])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():  # config and tokenizer files, not the float weights
        if item.is_file() and not item.name.startswith("model.safetensors") and item.suffix != ".safetensors":
            shutil.copy(item, out / item.name)
    if (folder / "original").is_dir() and not (out / "original").exists():
        shutil.copytree(folder / "original", out / "original",
                        ignore=shutil.ignore_patterns("*.pth", "*.safetensors"))
    save_safetensors(tensors, out / "model.safetensors", bf16=bits,
                     metadata={"format": "pt", "tinygpt_quantization": fmt})
    return out
