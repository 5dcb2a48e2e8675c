"""The book's chapter-5 loop (train/loop.py, issue 38.2): `train_model_simple` is the chapter's
listing, trains to the same losses as the resumable `train_model` without a schedule, stops at
the first non-finite loss, and prints the per-epoch sample as the book does."""
import numpy as np
import pytest

import tinygpt as tg
from test_train import CFG, fresh, loaders
from tinygpt.model import GPTModel
from tinygpt.tokenizer import get_gpt2_tokenizer
from tinygpt.train import train_model, train_model_simple


def test_the_book_loop_and_the_resumable_trainer_give_identical_losses(capsys):
    """train_model_simple (the chapter's listing) and train_model without a schedule: the same
    losses, tokens, weights and printed lines, on a shuffled loader with dropout on."""
    kw = dict(num_epochs=3, eval_freq=2, eval_iter=2, start_context="Every effort",
              tokenizer=get_gpt2_tokenizer())
    model, opt = fresh()
    train, val = loaders()
    simple = train_model_simple(model, train, val, opt, **kw)
    simple_out = capsys.readouterr().out
    model2, opt2 = fresh()
    train, val = loaders()
    result = train_model(model2, train, val, opt2, schedule=False, progress="none", **kw)
    assert simple == (result["train_losses"], result["val_losses"], result["tokens_seen"])
    for name, value in model.state_dict().items():
        assert np.array_equal(value, model2.state_dict()[name]), name
    assert capsys.readouterr().out == simple_out


def test_the_book_loop_stops_at_the_first_non_finite_loss(capsys):
    from tinygpt.errors import TrainingError
    train, val = loaders()
    model, opt = fresh(lr=1e4)
    with pytest.raises(TrainingError, match=r"the loss at step \d+ is (nan|inf)"):
        train_model_simple(model, train, val, opt, num_epochs=3, eval_freq=100, eval_iter=1,
                           start_context="Every effort", tokenizer=get_gpt2_tokenizer())
    assert "Every effort" not in capsys.readouterr().out  # it stopped within the first epoch


def test_the_book_loop_is_the_chapters_listing():
    import inspect
    from tinygpt.train import loop
    source = inspect.getsource(loop.train_model_simple)
    assert len(source.splitlines()) < 40, "train_model_simple is the book's ~30-line loop"
    for part in ("optimizer.zero_grad()", "loss.backward()", "optimizer.step()",
                 "evaluate_model(", "generate_and_print_sample("):
        assert part in source


def test_the_sample_prints_what_the_book_prints(monkeypatch):
    """A continuation of newlines is printed as spaces (the book's `.replace("\\n", " ")`), not
    stripped away: chapter 5's first samples are runs of such tokens."""
    from tinygpt.train import loop
    tg.manual_seed(0)
    model = GPTModel(CFG)
    tok = get_gpt2_tokenizer()
    newline = tok.encode("\n")[0]
    monkeypatch.setattr(loop, "generate", lambda m, ids, n, *a, **k: np.concatenate(
        [ids, np.full((1, n), newline)], axis=1))
    out = []
    text = loop.generate_and_print_sample(model, tok, "Every effort", 3, out.append)
    assert out == [text] == ["Every effort   "]
