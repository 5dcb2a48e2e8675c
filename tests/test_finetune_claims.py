"""A fine-tuning checkpoint's claims are checked against its tensors before anything is built
(issue 36.1/36.2): `classify` and `finetune-instruct --weights` refuse a file whose config or
num_classes claims more than its tensors hold, in one line, exit 2, without allocating for the
claim (peak memory of the command measured in a subprocess); a classifier's class_names must be
a list of at least num_classes strings."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

import tinygpt as tg
from tinygpt.errors import CheckpointError
from tinygpt.finetune.classify import load_classifier, replace_head
from tinygpt.model import GPTModel
from tinygpt.weights.safetensors_io import save_safetensors

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"  # this checkout's package
# emb_dim 128: a 26 MB file. Claimed: 3 million tokens (two 1.5 GB matrices) or 2 million classes
# (a 1 GB head); the command itself, tokenizer included, stays far below PEAK_MB.
CFG = {"vocab_size": 50257, "context_length": 32, "emb_dim": 128, "n_heads": 2, "n_layers": 1,
       "drop_rate": 0.0, "qkv_bias": True}
PEAK_MB = 500
LEFT_OUT = object()  # a claim the file does not record at all


def craft(path, model, **state):
    """A tinygpt checkpoint of `model`'s tensors whose recorded state says whatever `state` says
    (written directly, so no saver can refuse the lie)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    save_safetensors(tensors, path, metadata={"format": "tinygpt-checkpoint", "version": "1",
                                              "state": json.dumps({"tied": {}, **state})})
    return path


def classifier(path, classes=2, **claims):
    tg.manual_seed(0)
    model = replace_head(GPTModel(CFG), classes, trainable="all", seed=0)
    state = {"config": CFG, "num_classes": classes, "kind": "classifier", "max_length": 12,
             "class_names": ["not spam", "spam"]}
    return craft(path, model, **{k: v for k, v in {**state, **claims}.items() if v is not LEFT_OUT})


# The peak is VmHWM, the high-water mark of the interpreter's own memory: getrusage's ru_maxrss
# would also count the pytest process the child was forked from (Linux keeps it across exec).
RUN = ("import re, sys; from tinygpt import cli; code = cli.main(sys.argv[1:]); "
       "status = open('/proc/self/status').read(); "
       "print('peak-rss-kb', re.search(r'VmHWM:\\s*(\\d+) kB', status).group(1)); sys.exit(code)")


def tinygpt_peak(*args, cwd):
    """-> (exit code, stderr lines, peak resident MB) of `tinygpt args` in a fresh interpreter."""
    if not pathlib.Path("/proc/self/status").exists():
        pytest.skip("the peak-memory checks read Linux's /proc/self/status")
    done = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, "PYTHONPATH": str(SRC)})
    peak_kb = int(done.stdout.split("peak-rss-kb")[-1])
    return done.returncode, done.stderr.strip().splitlines(), peak_kb / 1024


@pytest.mark.parametrize("claims, message", [
    (dict(config={**CFG, "vocab_size": 3_000_000}),
     "the recorded config does not fit the tensors in the file: tok_emb.weight is (50257, 128), "
     "the config needs (3000000, 128)"),
    (dict(num_classes=2_000_000),
     "num_classes=2000000 needs out_head.weight of shape (2000000, 128), the file's is (2, 128)"),
])
def test_classify_checks_claims_before_building(tmp_path, claims, message):
    path = classifier(tmp_path / "clf.safetensors", **claims)
    code, err, peak_mb = tinygpt_peak("classify", "--model", str(path), "--text", "hi", cwd=tmp_path)
    assert code == 2 and len(err) == 1, err
    assert err[0] == f"tinygpt classify: error: {path}: {message}"
    assert peak_mb < PEAK_MB, peak_mb


def test_finetune_instruct_checks_a_checkpoints_claims_before_building(tmp_path):
    tg.manual_seed(0)
    path = craft(tmp_path / "lm.safetensors", GPTModel(CFG), config={**CFG, "vocab_size": 3_000_000})
    code, err, peak_mb = tinygpt_peak("finetune-instruct", "--weights", str(path), "--out",
                                      str(tmp_path / "run"), "--quiet", cwd=tmp_path)
    assert code == 2 and len(err) == 1, err
    assert "tok_emb.weight is (50257, 128), the config needs (3000000, 128)" in err[0], err
    assert peak_mb < PEAK_MB, peak_mb
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_true_classifier_loads_with_its_class_names(tmp_path):
    model, state = load_classifier(classifier(tmp_path / "clf.safetensors",
                                              class_names=["ham", "spam", "extra"]))
    assert model.out_head.weight.shape == (2, 128) and state["class_names"] == ["ham", "spam", "extra"]
    _, state = load_classifier(classifier(tmp_path / "old.safetensors", class_names=LEFT_OUT))
    assert state["class_names"] == ["not spam", "spam"]  # a file saved before they were recorded


@pytest.mark.parametrize("claims, message", [
    (dict(class_names=["spam"]), "class_names holds 1 names for num_classes=2"),
    (dict(class_names="not spam, spam"), "class_names must be a list of strings, got not spam, spam"),
    (dict(class_names=[0, 1]), r"class_names must be a list of strings, got \[0, 1\]"),
    (dict(num_classes="2"), "num_classes='2' is not a positive int"),
    (dict(num_classes=3), r"num_classes=3 needs out_head.weight of shape \(3, 128\), the file's is "
                          r"\(2, 128\)"),
    (dict(kind="pretrain"), "not a saved classifier"),
    (dict(classes=3, class_names=LEFT_OUT), "no class_names recorded for num_classes=3"),
    (dict(config={**CFG, "n_layers": 12}), "1 transformer blocks, the config says n_layers=12"),
])
def test_a_classifier_whose_claims_do_not_hold_is_refused_naming_file_and_key(tmp_path, claims,
                                                                                message):
    path = classifier(tmp_path / "clf.safetensors", **claims)
    with pytest.raises(CheckpointError, match=message) as caught:
        load_classifier(path)
    assert str(caught.value).startswith(str(path))
