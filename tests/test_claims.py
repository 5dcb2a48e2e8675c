"""A config's sizes are checked against the tensor headers before anything is built from them.

Each folder here holds a few KB of real tensors (tests/crafted_models.py) under a config.json that
lies about a size: the layer count (10^6 and 10^9 layers once cost 42 s and 4.4 GB, then a crash,
as a table was made per claimed layer), the vocabulary, the widths, the heads. The loader must
refuse with one line naming the config file and the key, in well under a second and without the
memory the claim describes (peak RSS of a fresh process that loads it, imports included); the
`tinygpt` command must exit 2 with that one line. Sharded folders: the index's weight_map must
name .safetensors files in the folder, by string."""
import json

import numpy as np
import pytest

from crafted_models import (GPT2_CFG, edit_index, load_in_child, run_cli, write_gpt2, write_modern)
from tinygpt.model import GPTModel
from tinygpt.weights import WeightsError, load_gpt2, load_pretrained, save_safetensors
from tinygpt.weights.safetensors_io import load_safetensors

SECONDS, PEAK_MB = 20.0, 400


@pytest.mark.parametrize("kind,key,value,message", [
    ("qwen3", "num_hidden_layers", 10 ** 6, "num_hidden_layers is 1000000 but the weights hold blocks 0..1 (2 of them)"),
    ("llama", "num_hidden_layers", 10 ** 9, "num_hidden_layers is 1000000000 but the weights hold blocks 0..1"),
    ("qwen3", "vocab_size", 3_000_000, "vocab_size is 3000000 but model.embed_tokens.weight has shape (50, 16)"),
    ("llama", "intermediate_size", 10 ** 7, "intermediate_size is 10000000 but model.layers.0.mlp.gate_proj.weight"),
])
def test_huge_claims_cost_neither_time_nor_memory(tmp_path, kind, key, value, message):
    folder = write_modern(tmp_path, kind, **{key: value})
    line, seconds, peak_mb = load_in_child(folder)
    assert line.startswith(f"REFUSED WeightsError {folder / 'config.json'}: ") and message in line, line
    assert seconds < SECONDS and peak_mb < PEAK_MB, (seconds, peak_mb, line)


@pytest.mark.parametrize("call", ["load_gpt2", "load_pretrained"])
@pytest.mark.parametrize("key,value,message", [
    ("n_layer", 10 ** 6, "n_layer is 1000000 but the weights hold blocks 0..1 (2 of them)"),
    ("n_layer", 10 ** 9, "n_layer is 1000000000 but the weights hold blocks 0..1"),
    ("vocab_size", 3_000_000, "vocab_size is 3000000 but wte.weight has shape (40, 8), which implies vocab_size 40"),
    ("n_positions", 10 ** 9, "n_positions is 1000000000 but wpe.weight has shape (8, 8)"),
])
def test_huge_gpt2_claims_cost_neither_time_nor_memory(tmp_path, call, key, value, message):
    folder = write_gpt2(tmp_path, **{key: value})
    line, seconds, peak_mb = load_in_child(folder, call)
    assert line.startswith(f"REFUSED WeightsError {folder / 'config.json'}: ") and message in line, line
    assert seconds < SECONDS and peak_mb < PEAK_MB, (seconds, peak_mb, line)


@pytest.mark.parametrize("kind,changes,message", [
    ("qwen3", {"num_hidden_layers": 1}, r"num_hidden_layers is 1 but the weights hold blocks 0\.\.1"),
    ("qwen3", {"hidden_size": 4096}, r"hidden_size is 4096 but model\.embed_tokens\.weight has shape "
                                     r"\(50, 16\), which implies hidden_size 16$"),
    ("qwen3", {"head_dim": 16}, r"head_dim is 16 but model\.layers\.0\.self_attn\.q_norm\.weight has "
                                r"shape \(8,\), which implies head_dim 8$"),
    ("qwen3", {"num_attention_heads": 8, "num_key_value_heads": 2},
     r"num_attention_heads is 8 but model\.layers\.0\.self_attn\.q_proj\.weight has shape \(32, 16\)"),
    ("llama", {"num_key_value_heads": 1}, r"num_key_value_heads is 1 but .*k_proj\.weight has shape "
                                          r"\(16, 32\), which implies num_key_value_heads 2 of head_dim 8$"),
    ("llama", {"hidden_size": 64}, r"hidden_size is 64 but model\.embed_tokens\.weight has shape \(50, 32\)"),
    ("llama", {"num_attention_heads": 2, "num_key_value_heads": 2},  # head_dim 32/2 = 16, not 8
     r"num_key_value_heads is 2 but .*k_proj\.weight has shape \(16, 32\), which implies "
     r"num_key_value_heads 1 of head_dim 16$"),
    ("qwen3", {"num_key_value_heads": 4, "head_dim": 6, "num_attention_heads": 4},
     r"head_dim is 6 but .*q_norm\.weight has shape \(8,\)"),
])
def test_each_claimed_size_is_named_by_its_key(tmp_path, kind, changes, message):
    folder = write_modern(tmp_path, kind, **changes)
    with pytest.raises(WeightsError, match=message) as info:
        load_pretrained(folder)
    assert str(info.value).startswith(f"{folder / 'config.json'}: ")


def test_layer_numbers_with_a_gap_or_out_of_reach_are_refused(tmp_path):
    folder = write_modern(tmp_path, "qwen3")
    tensors = dict(load_safetensors(folder / "model.safetensors"))
    moved = {n.replace("model.layers.1.", "model.layers.2."): v for n, v in tensors.items()}
    save_safetensors(moved, folder / "model.safetensors")
    with pytest.raises(WeightsError, match=r"num_hidden_layers is 2 but the weights hold blocks "
                                           r"0\.\.2 \(2 of them\)"):
        load_pretrained(folder)
    # a block number no model has (a claim in a name) is not counted: it is an unexpected name
    huge = {n.replace("model.layers.1.", "model.layers." + "9" * 4400 + "."): v
            for n, v in tensors.items()}
    save_safetensors(huge, folder / "model.safetensors")
    with pytest.raises(WeightsError, match=r"num_hidden_layers is 2 but the weights hold blocks 0\.\.0 \(1"):
        load_pretrained(folder)
    write_modern(tmp_path, "qwen3", num_hidden_layers=1)
    save_safetensors(huge, folder / "model.safetensors")
    with pytest.raises(WeightsError, match=r"unexpected model\.layers\.9999"):
        load_pretrained(folder)


def test_pytorch_files_with_a_lying_config_are_refused_by_key(tmp_path):
    torch = pytest.importorskip("torch")
    model = GPTModel(GPT2_CFG)
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()},
               tmp_path / "model.pth")
    with pytest.raises(WeightsError, match=r"^config: n_layers is 1000000000 but the weights hold "
                                           r"blocks 0\.\.1 \(2 of them\)$"):
        load_gpt2(tmp_path / "model.pth", config={**GPT2_CFG, "n_layers": 10 ** 9})
    with pytest.raises(WeightsError, match=r"^config: emb_dim is 4096 but tok_emb\.weight has shape "
                                           r"\(40, 8\), which implies emb_dim 8$"):
        load_gpt2(tmp_path / "model.pth", config={**GPT2_CFG, "emb_dim": 4096})
    assert isinstance(load_gpt2(tmp_path / "model.pth", config=GPT2_CFG), GPTModel)


def test_sharded_folders_load_and_their_weight_map_is_checked(tmp_path):
    folder = write_modern(tmp_path, "llama", shards=2)
    assert load_pretrained(folder).cfg["n_layers"] == 2
    index = folder / "model.safetensors.index.json"
    first = json.loads(index.read_text())["weight_map"]
    some = sorted(first)[0]

    def refused(edit, message):
        edit_index(folder, edit)
        with pytest.raises(WeightsError, match=message) as info:
            load_pretrained(folder)
        assert str(info.value).startswith(f"{index}: ")
        edit_index(folder, lambda ix: ix.update(weight_map=dict(first)))

    for bad in (1, ["model-00001-of-00002.safetensors"], None, {"file": "x"}):
        refused(lambda ix: ix["weight_map"].update({some: bad}),
                rf"weight_map\['{some}'\] must be a \.safetensors file name in the folder, got ")
    for bad in ("../model-00001-of-00002.safetensors", str(folder / "model-00001-of-00002.safetensors"),
                "sub/model.safetensors", "..", "config.json", "model-00001-of-00002.safetensors\\x"):
        refused(lambda ix: ix["weight_map"].update({some: bad}),
                r"weight_map\[.*\] must be a \.safetensors file name in the folder")
    refused(lambda ix: ix["weight_map"].update({some: "model-00009-of-00009.safetensors"}),
            r"weight_map names shard 'model-00009-of-00009\.safetensors', which is not a file in ")
    refused(lambda ix: ix.update(weight_map=list(first.items())), r"weight_map must be a JSON object")
    refused(lambda ix: ix.pop("weight_map"), r"weight_map must be a JSON object .*, got None")
    refused(lambda ix: ix.update(weight_map={}), r"weight_map must be a JSON object")
    assert load_pretrained(folder).cfg["n_layers"] == 2


@pytest.mark.parametrize("lie", [
    {"num_hidden_layers": 10 ** 9}, {"tie_word_embeddings": "no"}, {"rope_scaling": [1, 2]},
    {"num_attention_heads": 0}, {"torch_dtype": ["bfloat16"]}])
def test_the_command_prints_one_line_and_exits_2(tmp_path, lie):
    folder = write_modern(tmp_path, "llama", **lie)
    run = run_cli("generate", "--model", folder, "--prompt", "hi")
    key = next(iter(lie))
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert str(folder / "config.json") in run.stderr and key in run.stderr, run.stderr


def test_the_command_refuses_a_gpt2_folder_and_a_bad_index_in_one_line(tmp_path):
    run = run_cli("generate", "--model", write_gpt2(tmp_path / "gpt2", n_layer=10 ** 9), "--prompt", "hi")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "n_layer is 1000000000 but the weights hold blocks 0..1" in run.stderr
    folder = write_modern(tmp_path / "sharded", "qwen3", shards=2)
    edit_index(folder, lambda ix: ix["weight_map"].update({"lm_head.weight": ["x"]}))
    run = run_cli("generate", "--model", folder, "--prompt", "hi")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "weight_map['lm_head.weight'] must be a .safetensors file name" in run.stderr
