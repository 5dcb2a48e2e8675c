"""Ctrl-C (SIGINT) or SIGTERM at any point of a run, then resume: bit-identical to the run that was
never interrupted (issue 27.1). Each run is a real process: a driver script calls
`tinygpt.train.pretrain.pretrain` with one function wrapped to send the signal to its own process
at a chosen moment -- after a step's backward pass, inside the optimizer step, inside an
evaluation, or in the middle of writing a checkpoint."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tinygpt.train import read_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DRIVER = textwrap.dedent('''
    import os, signal, sys
    from tinygpt.assets import asset_path
    from tinygpt.train import checkpoint, loop, pretrain as pretrain_module
    from tinygpt.core.tensor import Tensor

    out, point, signame, nth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    resume = sys.argv[5] if len(sys.argv) > 5 else None
    sig = getattr(signal, signame) if signame != "-" else None
    calls = [0]

    def hits():  # True at the nth call of the wrapped function
        calls[0] += 1
        return calls[0] == nth

    def kill():
        os.kill(os.getpid(), sig)

    def after(fn):  # send the signal right after fn returns, still inside the wrapper
        def wrapper(*a, **k):
            result = fn(*a, **k)
            if hits():
                kill()
            return result
        return wrapper

    if point == "backward":
        Tensor.backward = after(Tensor.backward)
    elif point == "evaluate":  # the train half of an evaluation is done, the val half not
        loop.calc_loss_loader = after(loop.calc_loss_loader)
    elif point == "optimizer_step":
        from tinygpt.optim import AdamW
        real_step = AdamW.step
        def step(self):
            if hits():
                kill()  # the signal arrives before the update; it must wait for the step
            real_step(self)
        AdamW.step = step
    elif point == "save":
        real_save = checkpoint.save_safetensors
        def save(tensors, path, metadata=None):
            if hits():  # half-way through the data: the temporary file is on disk
                class KillMidway(dict):
                    reads = 0
                    def __getitem__(self, key):
                        KillMidway.reads += 1
                        if KillMidway.reads == len(self) + len(self) // 2:
                            tmps = [p for p in os.listdir(out) if p.endswith(".tmp")]
                            print("TEMPS AT KILL", len(tmps), flush=True)
                            kill()
                        return dict.__getitem__(self, key)
                tensors = KillMidway(tensors)
            return real_save(tensors, path, metadata)
        checkpoint.save_safetensors = save

    text = asset_path("the-verdict.txt").read_text(encoding="utf-8")[:2000]
    cfg = {**pretrain_module.PRESETS["tiny"], "context_length": 32, "emb_dim": 32, "n_heads": 2,
           "drop_rate": 0.1}
    try:
        pretrain_module.pretrain(text, None if resume else cfg, num_epochs=3, batch_size=2,
                                 eval_freq=2, eval_iter=2, seed=5, out_dir=out, resume=resume,
                                 schedule=True, quiet=True, plot=False, checkpoint_every=3,
                                 start_context="Every effort")
    except KeyboardInterrupt as err:
        print("INTERRUPTED", getattr(err, "signum", None), flush=True)
        sys.exit(3)
''')


def run(tmp_path, out, point="-", signame="-", nth=0, resume=None):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    args = [sys.executable, str(driver), str(out), point, signame, str(nth)]
    args += [str(resume)] if resume else []
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "src")}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)


def final_state(path):
    model, optim, state = read_checkpoint(path)
    return model, optim, state


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("straight")
    proc = run(tmp, tmp / "out")
    assert proc.returncode == 0, proc.stderr
    return proc, final_state(tmp / "out" / "model.safetensors")


CASES = [("backward", "SIGINT", 9), ("backward", "SIGTERM", 9),
         ("evaluate", "SIGINT", 7), ("evaluate", "SIGTERM", 7),
         ("save", "SIGINT", 2), ("save", "SIGTERM", 2), ("optimizer_step", "SIGTERM", 5)]


@pytest.mark.parametrize("point,signame,nth", CASES)
def test_interrupt_then_resume_is_bit_identical(tmp_path, uninterrupted, point, signame, nth):
    straight_proc, (want_model, want_optim, want_state) = uninterrupted
    out = tmp_path / "out"
    stopped = run(tmp_path, out, point, signame, nth)
    signum = {"SIGINT": 2, "SIGTERM": 15}[signame]
    assert stopped.returncode == 3, stopped.stderr
    assert f"INTERRUPTED {signum}" in stopped.stdout
    if point == "save":  # the signal really came in the middle of writing a file
        assert "TEMPS AT KILL 1" in stopped.stdout, stopped.stdout
    ckpt = out / "model.safetensors"
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]  # no temp left
    saved = read_checkpoint(ckpt)[2]["loop"]
    assert 0 < saved["global_step"] < want_state["loop"]["global_step"]

    resumed = run(tmp_path, out, resume=ckpt)
    assert resumed.returncode == 0, resumed.stderr
    model, optim, state = final_state(ckpt)
    assert model.keys() == want_model.keys()
    for name in want_model:
        assert np.array_equal(model[name], want_model[name]), name
    for i, entries in want_optim["state"].items():
        for key, value in entries.items():
            assert np.array_equal(optim["state"][i][key], value), (i, key)
    assert optim["param_groups"] == want_optim["param_groups"]
    assert state["loop"] == want_state["loop"]  # losses, lrs, tokens seen, positions
    assert state["rng"] == want_state["rng"]
    # the evaluation lines of both processes together are those of the straight run
    evals = [line for line in stopped.stdout.splitlines() + resumed.stdout.splitlines()
             if line.startswith("Ep ")]
    assert evals == [line for line in straight_proc.stdout.splitlines() if line.startswith("Ep ")]


def test_the_run_restores_the_signal_handlers_it_replaced():
    import signal

    from tinygpt.train.signals import Interrupted, SignalGuard
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    guard = SignalGuard()
    with guard:
        assert signal.getsignal(signal.SIGINT) == guard._handle
        with pytest.raises(Interrupted) as caught:
            with guard.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                finished = True  # the block runs to its end before the signal is raised
        assert finished and caught.value.signum == signal.SIGTERM
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_importing_tinygpt_installs_no_signal_handler():
    code = ("import signal; before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM);"
            "import tinygpt, tinygpt.train;"
            "assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.path.join(REPO, "src")}, timeout=120)
    assert proc.returncode == 0, proc.stderr



CLI_DRIVER = textwrap.dedent('''
    import os, signal, sys
    from tinygpt.cli import main
    from tinygpt.core.tensor import Tensor

    nth, calls, real_backward = int(sys.argv[1]), [0], Tensor.backward

    def backward(self, *a, **k):  # the signal comes right after the nth backward pass
        real_backward(self, *a, **k)
        calls[0] += 1
        if calls[0] == nth:
            os.kill(os.getpid(), getattr(signal, sys.argv[2]))
    Tensor.backward = backward
    sys.exit(main(sys.argv[3:]))
''')


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_pretrain_says_where_it_saved_and_the_command_that_resumes(tmp_path, signame):
    import json
    import shlex

    from tinygpt.assets import asset_path
    text = tmp_path / "story.txt"
    text.write_text(asset_path("the-verdict.txt").read_text(encoding="utf-8")[:2000])
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"vocab_size": 50257, "context_length": 16, "emb_dim": 16,
                               "n_heads": 2, "n_layers": 1, "drop_rate": 0.0, "qkv_bias": False}))
    out = tmp_path / "run"
    driver = tmp_path / "cli_driver.py"
    driver.write_text(CLI_DRIVER)
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "src")}
    stopped = subprocess.run([sys.executable, str(driver), "5", signame, "pretrain", "--text",
                              str(text), "--config", str(cfg), "--epochs", "2", "--lr", "1e-3",
                              "--out", str(out), "--quiet"], capture_output=True, text=True,
                             env=env, timeout=300)
    signum = {"SIGINT": 2, "SIGTERM": 15}[signame]
    assert stopped.returncode == 128 + signum, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    ckpt = out / "model.safetensors"
    prefix = f"tinygpt pretrain: interrupted; checkpoint after 4 steps saved to {ckpt}; resume with: "
    assert last.startswith(prefix), last
    command = shlex.split(last[len(prefix):])
    assert command == ["python", "-m", "tinygpt", "pretrain", "--text", str(text), "--resume",
                       str(ckpt), "--out", str(out), "--epochs", "2", "--quiet"]
    assert read_checkpoint(ckpt)[2]["loop"]["global_step"] == 3

    resumed = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True,
                             env=env, timeout=300)  # the lr of 1e-3 comes from the checkpoint
    assert resumed.returncode == 0, resumed.stderr
    state = read_checkpoint(ckpt)[2]
    assert state["loop"]["epoch"] == 2 and state["settings"]["lr"] == 1e-3
