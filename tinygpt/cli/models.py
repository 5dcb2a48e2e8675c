"""Which model a command means: a tinygpt checkpoint, a folder holding one, or GPT-2 weights."""
import pathlib

from ..errors import InputError

CHECKPOINT_FILE = "model.safetensors"


def load_model(source):
    """-> (GPTModel in eval mode, its config) from `source`: a tinygpt checkpoint written by
    pretrain or finetune-instruct (the file, or the folder holding `model.safetensors`), a
    Hugging Face GPT-2 folder or file, a `.pth` state dict, or a GPT-2 size name."""
    path = pathlib.Path(source)
    if path.is_dir() and _is_checkpoint(path / CHECKPOINT_FILE):
        path = path / CHECKPOINT_FILE
    if path.is_dir() and (path / "classifier.safetensors").is_file():
        raise InputError(f"{source} holds a spam classifier (chapter 6), which labels messages "
                         "rather than writing text: use `tinygpt classify --model " f"{source}`")
    if path.is_file() and _is_checkpoint(path):
        return _from_checkpoint(path)
    from ..weights import load_gpt2
    model = load_gpt2(str(source))
    model.eval()
    return model, model.cfg


def _is_checkpoint(path: pathlib.Path) -> bool:
    if not path.is_file() or path.suffix != ".safetensors":
        return False
    from ..weights.safetensors_io import read_header
    _, metadata, _ = read_header(path)
    return metadata.get("format") == "tinygpt-checkpoint"


def _from_checkpoint(path: pathlib.Path):
    from ..train.checkpoint import load_model
    model, state = load_model(path)  # the model's tensors only, after checking its config
    if state.get("kind") == "classifier":
        raise InputError(f"{path} is a spam classifier (chapter 6), which labels messages rather "
                         f"than writing text: use `tinygpt classify --model {path}`")
    model.eval()
    return model, state["config"]
