"""Pretraining (issue: chapter 5 / appendix D): the loops, losses, schedule, checkpoints, resume."""
import math
import pathlib

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.assets import asset_path
from tinygpt.data import create_dataloader_v1
from tinygpt.model import GPTModel
from tinygpt.nn import functional as F
from tinygpt.optim import AdamW, warmup_cosine_lr
from tinygpt.tokenizer import get_gpt2_tokenizer
from tinygpt.train import (calc_loss_batch, calc_loss_loader, load_checkpoint, perplexity,
                           plot_losses, read_checkpoint, save_checkpoint, train_model,
                           train_model_simple)
from tinygpt.train import checkpoint as checkpoint_module

CFG = {"vocab_size": 50257, "context_length": 16, "emb_dim": 32, "n_heads": 2, "n_layers": 2,
       "drop_rate": 0.1, "qkv_bias": False}


def loaders(chars=3000, batch_size=4, seed=7):
    text = asset_path("the-verdict.txt").read_text()[:chars]
    split = int(0.9 * len(text))
    ctx = CFG["context_length"]
    train = create_dataloader_v1(text[:split], batch_size=batch_size, max_length=ctx, stride=ctx,
                                 shuffle=True, drop_last=True, seed=seed)
    val = create_dataloader_v1(text[split:], batch_size=batch_size, max_length=ctx, stride=ctx,
                               shuffle=False, drop_last=False)
    return train, val


def fresh(seed=123, lr=1e-3):
    tg.manual_seed(seed)
    model = GPTModel(CFG)
    return model, AdamW(model.parameters(), lr=lr, weight_decay=0.1)


def test_calc_loss_batch_equals_direct_cross_entropy():
    train, _ = loaders()
    model, _ = fresh()
    model.eval()
    inputs, targets = next(iter(train))
    logits = model(inputs).data.astype(np.float64).reshape(-1, CFG["vocab_size"])
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    direct = np.mean(lse - logits[np.arange(len(logits)), targets.reshape(-1)])
    assert abs(calc_loss_batch(inputs, targets, model).item() - direct) < 1e-4


def test_calc_loss_loader_averages_batches_and_respects_num_batches():
    train, val = loaders()
    model, _ = fresh()
    model.eval()
    per_batch = [calc_loss_batch(x, y, model).item() for x, y in val]
    assert math.isclose(calc_loss_loader(val, model), np.mean(per_batch), rel_tol=1e-6)
    assert math.isclose(calc_loss_loader(val, model, num_batches=1), per_batch[0], rel_tol=1e-6)
    assert math.isclose(perplexity(2.0), math.exp(2.0))


def test_training_lowers_the_loss(capsys):
    train, val = loaders()
    model, opt = fresh(lr=4e-3)
    tr, va, tokens = train_model_simple(model, train, val, opt, num_epochs=3, eval_freq=2, eval_iter=2,
                                        start_context="Every effort", tokenizer=get_gpt2_tokenizer())
    assert len(tr) == len(va) == len(tokens) and tokens == sorted(tokens)
    assert tr[-1] < tr[0] - 1.0, tr
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Ep 1 (Step 000000): Train loss ") and ", Val loss " in lines[0]
    assert sum(line.startswith("Every effort") for line in lines) == 3  # a sample per epoch


def test_schedule_warms_up_then_decays_as_in_appendix_d():
    lrs = [warmup_cosine_lr(s, 100, 20, peak_lr=0.01, initial_lr=1e-4, min_lr=1e-5) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4)
    assert all(a < b for a, b in zip(lrs[:20], lrs[1:21]))
    assert lrs[20] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:]))
    progress = (60 - 20) / 80
    assert lrs[60] == pytest.approx(1e-5 + (0.01 - 1e-5) * 0.5 * (1 + math.cos(math.pi * progress)))


def test_train_model_tracks_learning_rate_and_clips():
    train, val = loaders()
    model, opt = fresh(lr=1e-2)
    result = train_model(model, train, val, opt, num_epochs=2, eval_freq=3, eval_iter=1,
                         start_context="", tokenizer=None, warmup_steps=3, initial_lr=1e-4,
                         min_lr=1e-5, quiet=True)
    assert len(result["lrs"]) == 2 * len(train)
    assert result["lrs"][0] == pytest.approx(1e-4) and max(result["lrs"]) <= 1e-2 + 1e-12
    assert result["lrs"][-1] < result["lrs"][3]


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    """Stop mid-epoch (dropout on, shuffled loader), resume from the checkpoint in a fresh model
    and optimizer: the loss history must equal the uninterrupted run's exactly."""
    kw = dict(num_epochs=3, eval_freq=2, eval_iter=2, start_context="", tokenizer=None, quiet=True)
    model, opt = fresh()
    train, val = loaders()
    full = train_model(model, train, val, opt, schedule=True, warmup_steps=2, **kw)

    model, opt = fresh()
    train, val = loaders()
    ckpt = tmp_path / "ckpt.safetensors"
    steps = len(train) + len(train) // 2 + 1  # mid-way through the second epoch
    first = train_model(model, train, val, opt, schedule=True, warmup_steps=2,
                        checkpoint_path=ckpt, max_steps=steps, **kw)
    assert first["global_step"] == steps - 1 and ckpt.exists()

    tg.manual_seed(999)  # other weights and RNG state: the checkpoint must restore all of it
    model = GPTModel(CFG)
    opt = AdamW(model.parameters(), lr=5.0, weight_decay=0.1)
    train, val = loaders()
    with pytest.raises(ValueError, match=r"other settings \(lr \(--lr\): checkpoint 0.001, given 5.0\)"):
        train_model(model, train, val, opt, schedule=True, warmup_steps=2, resume_from=ckpt, **kw)
    with pytest.raises(ValueError, match=r"warmup_steps: checkpoint 2, given 3"):
        train_model(model, train, val, fresh(seed=999)[1], schedule=True, warmup_steps=3,
                    resume_from=ckpt, **kw)
    opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)  # the run's own settings
    resumed = train_model(model, train, val, opt, schedule=True, warmup_steps=2,
                          resume_from=ckpt, **kw)
    assert resumed["train_losses"] == full["train_losses"]
    assert resumed["val_losses"] == full["val_losses"]
    assert resumed["lrs"] == full["lrs"] and resumed["tokens_seen"] == full["tokens_seen"]


def test_checkpoint_round_trip_with_tied_weights_and_state(tmp_path):
    model, opt = fresh()
    model.out_head.weight = model.tok_emb.weight
    train, _ = loaders()
    x, y = next(iter(train))
    calc_loss_batch(x, y, model).backward()
    opt.step()
    path = save_checkpoint(tmp_path / "a.safetensors", model, opt, loop={"epoch": 3}, config=CFG)
    model2, opt2 = fresh(seed=5)
    model2.out_head.weight = model2.tok_emb.weight
    state = load_checkpoint(path, model2, opt2)
    assert state["loop"] == {"epoch": 3} and state["config"] == CFG
    for k, v in model.state_dict().items():
        assert np.array_equal(v, model2.state_dict()[k])
    assert model2.out_head.weight is model2.tok_emb.weight
    a, b = opt.state_dict(), opt2.state_dict()
    for i in a["state"]:
        assert a["state"][i]["step"] == b["state"][i]["step"]
        assert np.array_equal(a["state"][i]["exp_avg_sq"], b["state"][i]["exp_avg_sq"])


def test_saving_a_checkpoint_does_not_copy_the_model_or_optimizer_arrays(tmp_path):
    # ch05's final save once copied AdamW's two moments first: +1.3 GB at the 124M size.
    import tracemalloc
    model, opt = fresh()
    train, _ = loaders()
    x, y = next(iter(train))
    calc_loss_batch(x, y, model).backward()
    opt.step()
    moments = sum(v.nbytes for s in opt.state.values() for v in s.values() if isinstance(v, np.ndarray))
    tracemalloc.start()  # NumPy reports its data buffers to tracemalloc
    try:
        save_checkpoint(tmp_path / "big.safetensors", model, opt)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.1 * moments, (peak, moments)


def test_truncated_or_foreign_checkpoint_is_refused_and_nothing_loads(tmp_path):
    model, opt = fresh()
    path = save_checkpoint(tmp_path / "c.safetensors", model, opt)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    other, other_opt = fresh(seed=9)
    before = {k: v.copy() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_checkpoint(truncated, other, other_opt)
    from safetensors.numpy import save_file
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": np.zeros(3, np.float32)}, str(foreign))
    with pytest.raises(ValueError, match="not a tinygpt checkpoint"):
        load_checkpoint(foreign, other, other_opt)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.safetensors")
    smaller = GPTModel({**CFG, "emb_dim": 16})
    with pytest.raises(ValueError, match="shape mismatches"):
        load_checkpoint(path, smaller)
    for k, v in other.state_dict().items():
        assert np.array_equal(v, before[k])


def test_a_save_killed_midway_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, opt = fresh()
    path = save_checkpoint(tmp_path / "m.safetensors", model, opt, loop={"step": 1})
    good = path.read_bytes()
    from tinygpt.weights import safetensors_io
    real, calls = safetensors_io._tensor_bytes, []

    def dies_midway(arr, dtype):  # part of the new file is written when the process "dies"
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(arr, dtype)

    monkeypatch.setattr(safetensors_io, "_tensor_bytes", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, opt, loop={"step": 2})
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left
    assert read_checkpoint(path)[2]["loop"] == {"step": 1}


def test_plot_losses_writes_a_png_with_the_umask_mode(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        out = plot_losses([0, 1, 2], [10, 20, 30], [3.0, 2.0, 1.0], [3.5, 3.0, 2.9], tmp_path / "p.png")
    finally:
        os.umask(old)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_mode & 0o777 == 0o644  # as open() makes it, not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]


def test_plot_without_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_losses([0], [1], [1.0], [1.0], tmp_path / "p.png")


def test_piped_output_has_plain_lines_no_bar_redraws_or_padding(tmp_path):
    """stderr and stdout are pipes here (as in CI or `> log 2>&1`): no carriage returns, no
    trailing spaces, and progress as whole lines."""
    import subprocess
    import sys
    code = (
        "from tinygpt.assets import asset_path\n"
        "from tinygpt.train.pretrain import pretrain, PRESETS\n"
        "text = asset_path('the-verdict.txt').read_text(encoding='utf-8')[:1500]\n"
        "cfg = {**PRESETS['tiny'], 'context_length': 16, 'emb_dim': 16, 'n_layers': 1}\n"
        f"pretrain(text, cfg, num_epochs=2, batch_size=2, eval_freq=4, eval_iter=1, plot=False,"
        f" out_dir={str(tmp_path)!r}, start_context='Every effort moves you')\n")
    repo = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(repo / "src")}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for stream in (proc.stdout, proc.stderr):
        assert "\r" not in stream
        # (a sample is printed as the book prints it, spaces for its newlines included)
        assert all(line == line.rstrip() for line in stream.splitlines()
                   if not line.startswith("Every effort")), stream
    progress = [line for line in proc.stderr.splitlines() if line.startswith("train: step ")]
    import re
    assert progress and re.match(r"train: step (\d+)/\1, loss ", progress[-1]), progress
    assert any(line.startswith("Every effort moves you") for line in proc.stdout.splitlines())


def test_progress_lines_mode_prints_a_bounded_number_of_lines(capsys):
    from tinygpt.train.progress import LINES_PER_RUN, Progress
    progress = Progress(total=200, done=0, mode="lines")
    for _ in range(200):
        progress.step(1.5, 1e-3, 100.0)
    progress.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == LINES_PER_RUN and lines[-1].startswith("train: step 200/200, loss 1.500")


def test_kernels_are_compiled_before_the_first_step_with_a_notice_when_slow(monkeypatch, capsys):
    import time

    from tinygpt.train import progress as progress_module
    from tinygpt.train import trainer as loop_module
    events = []

    def slow_warmup(dtype):  # stands in for a first-run compile
        events.append(("warmup", str(dtype)))
        time.sleep(0.5)
        return 0.5

    real_loss = loop_module.calc_loss_batch
    monkeypatch.setattr(progress_module.kernels, "warmup", slow_warmup)
    monkeypatch.setattr(progress_module, "COMPILE_NOTICE_SECONDS", 0.05)
    monkeypatch.setattr(loop_module, "calc_loss_batch",
                        lambda *a: events.append(("step",)) or real_loss(*a))
    train, val = loaders()
    model, opt = fresh()
    train_model(model, train, val, opt, num_epochs=1, eval_freq=100, eval_iter=1,
                start_context="", tokenizer=None, progress="lines", max_steps=1)
    assert events[:2] == [("warmup", "float32"), ("step",)]
    err = capsys.readouterr().err
    # the notice says what is measured (7-11 s on 2 cores), not "about a minute"
    assert "compiling Numba kernels (first run only, about 20 s)..." in err
    assert "kernels ready after" in err

    model, opt = fresh()  # quiet: compiled all the same, without a word
    train_model(model, train, val, opt, num_epochs=1, eval_freq=100, eval_iter=1,
                start_context="", tokenizer=None, quiet=True, max_steps=1)
    assert events[-2:] == [("warmup", "float32"), ("step",)]
    assert "compiling" not in capsys.readouterr().err

    monkeypatch.setattr(progress_module.kernels, "warmup", lambda dtype: 0.0)  # cached: silent
    model, opt = fresh()
    train_model(model, train, val, opt, num_epochs=1, eval_freq=100, eval_iter=1,
                start_context="", tokenizer=None, quiet=True, max_steps=1)
    assert "compiling" not in capsys.readouterr().err


def test_the_bar_estimate_does_not_extrapolate_a_slow_first_step():
    import io
    import time

    from tinygpt.train.progress import Progress
    progress = Progress(total=1000, mode="bar", file=io.StringIO())
    time.sleep(0.5)  # a first step with one-time costs
    progress.step(1.0, 1e-3, 1.0)
    for _ in range(20):  # then fast steps
        time.sleep(0.002)
        progress.step(1.0, 1e-3, 1.0)
    rate = progress.bar.format_dict["n"] - progress.bar.format_dict["initial"]
    elapsed = progress.bar.format_dict["elapsed"]
    assert rate == 20 and elapsed < 0.4, elapsed  # the 0.5 s step is not in the estimate
    progress.close()


@pytest.mark.parametrize("arch", ["qwen3", "llama3"])
def test_the_per_epoch_sample_works_for_the_modern_models(arch):
    from modern_models import TINY_LLAMA, TINY_QWEN3
    from tinygpt.model import Llama3Model, Qwen3Model
    from tinygpt.tokenizer import get_gpt2_tokenizer
    from tinygpt.train.loop import generate_and_print_sample
    cls, cfg = (Qwen3Model, TINY_QWEN3) if arch == "qwen3" else (Llama3Model, TINY_LLAMA)
    tg.manual_seed(0)
    model = cls({**cfg, "vocab_size": 50257})
    lines = []
    text = generate_and_print_sample(model, get_gpt2_tokenizer(), "Every effort", 5, lines.append)
    assert text.startswith("Every effort") and lines == [text] and model.training


def test_the_sample_stops_at_the_end_token_when_given():
    """Chapter 7's per-epoch samples end at <|endoftext|> (finetune.instruct passes its id)."""
    from tinygpt.tokenizer import get_gpt2_tokenizer
    from tinygpt.train.loop import generate_and_print_sample
    tg.manual_seed(0)
    model = GPTModel({**CFG, "vocab_size": 50257})
    h = np.linspace(1.0, 2.0, model.cfg["emb_dim"], dtype=np.float32)
    model.final_norm.scale.data[...] = 0.0      # final_norm outputs h at every position ...
    model.final_norm.shift.data[...] = h
    model.out_head.weight.data[...] = 0.0
    model.out_head.weight.data[50256] = h       # ... and only <|endoftext|>'s logit is positive
    tok, out = get_gpt2_tokenizer(), []
    assert generate_and_print_sample(model, tok, "Hi", 3, out.append, eos_id=50256) == "Hi"
    assert generate_and_print_sample(model, tok, "Hi", 3, out.append) == "Hi" + "<|endoftext|>" * 3
