"""Book ch. 2.6: the sliding-window dataset, the DataLoader and create_dataloader_v1."""
import ast
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygpt
from tinygpt.assets import asset_path
from tinygpt.data import DataLoader, GPTDatasetV1, create_dataloader_v1, default_collate
from tinygpt.tokenizer import get_gpt2_tokenizer

PACKAGE = pathlib.Path(tinygpt.__file__).resolve().parent  # the package under test, source or installed


@pytest.fixture(scope="module")
def verdict():
    return asset_path("the-verdict.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def verdict_ids(verdict):
    return np.array(get_gpt2_tokenizer().encode(verdict), dtype=np.int64)


def collect(loader):
    return [tuple(np.array(a) for a in batch) for batch in loader]


# ---- GPTDatasetV1 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("max_length, stride", [(4, 4), (4, 1), (7, 3), (256, 128), (5144, 1)])
def test_every_window_is_the_right_slice(verdict, verdict_ids, max_length, stride):
    ds = GPTDatasetV1(verdict, get_gpt2_tokenizer(), max_length=max_length, stride=stride)
    n = len(verdict_ids)
    assert len(ds) == len(range(0, n - max_length, stride)) == math.ceil((n - max_length) / stride)
    for i in range(len(ds)):
        x, y = ds[i]
        start = i * stride
        assert x.dtype == np.int64 and y.dtype == np.int64
        np.testing.assert_array_equal(x, verdict_ids[start : start + max_length])
        np.testing.assert_array_equal(y, verdict_ids[start + 1 : start + max_length + 1])
    assert ds.input_ids.shape == ds.target_ids.shape == (len(ds), max_length)
    np.testing.assert_array_equal(ds[-1][0], ds.input_ids[len(ds) - 1])


def test_dataset_items_are_read_only(verdict):
    x, _ = GPTDatasetV1(verdict, max_length=4, stride=4)[0]
    with pytest.raises(ValueError, match="read-only"):
        x[0] = 0


def test_dataset_errors(verdict):
    with pytest.raises(ValueError, match=r"text too short: it has 3 tokens, but one window needs max_length \+ 1 = 5"):
        GPTDatasetV1("one two three", max_length=4, stride=1)
    assert len(GPTDatasetV1("one two three four five", max_length=4, stride=1)) == 1  # exactly one window
    with pytest.raises(TypeError, match="decode bytes first"):
        GPTDatasetV1(verdict.encode(), max_length=4, stride=4)
    with pytest.raises(ValueError, match="max_length must be >= 1, got 0"):
        GPTDatasetV1(verdict, max_length=0, stride=4)
    with pytest.raises(TypeError, match="stride must be an int, got float"):
        GPTDatasetV1(verdict, max_length=4, stride=2.0)
    with pytest.raises(IndexError, match="out of range"):
        GPTDatasetV1(verdict, max_length=4, stride=4)[1286]
    assert 50256 in GPTDatasetV1("a <|endoftext|> b c d", max_length=2, stride=1).token_ids


# ---- the book's settings -----------------------------------------------------------------------------

def test_book_batch_count_and_first_batch(verdict, verdict_ids):
    n_tokens, batch_size, max_length, stride = len(verdict_ids), 8, 4, 4
    assert n_tokens == 5145
    n_windows = math.ceil((n_tokens - max_length) / stride)  # window starts 0, 4, ..., 5140
    assert n_windows == 1286  # by hand: (5145 - 4) / 4 = 1285.25 -> 1286 starts
    assert n_windows // batch_size == 160 and math.ceil(n_windows / batch_size) == 161  # 160 full + one of 6

    loader = create_dataloader_v1(verdict, batch_size=8, max_length=4, stride=4, shuffle=False)  # drop_last=True
    batches = collect(loader)
    assert len(loader) == len(batches) == n_windows // batch_size == 160
    x, y = batches[0]
    np.testing.assert_array_equal(x[:2], [[40, 367, 2885, 1464], [1807, 3619, 402, 271]])  # the book's output
    np.testing.assert_array_equal(y[:2], [[367, 2885, 1464, 1807], [3619, 402, 271, 10899]])
    for x, y in batches:
        assert x.shape == y.shape == (8, 4) and x.dtype == y.dtype == np.int64


def test_last_partial_batch(verdict):
    loader = create_dataloader_v1(verdict, batch_size=8, max_length=4, stride=4, shuffle=False, drop_last=False)
    batches = collect(loader)
    assert len(loader) == len(batches) == 161
    assert [b[0].shape for b in batches[:-1]] == [(8, 4)] * 160
    x, y = batches[-1]
    assert x.shape == y.shape == (1286 % 8, 4) == (6, 4)
    ds = loader.dataset
    np.testing.assert_array_equal(x, ds.input_ids[-6:])
    np.testing.assert_array_equal(y, ds.target_ids[-6:])
    # all windows, in order, exactly once
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), ds.input_ids)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 40), batch_size=st.integers(1, 12), drop_last=st.booleans(), shuffle=st.booleans())
def test_len_matches_the_batches_yielded(n, batch_size, drop_last, shuffle):
    data = [(np.array([i, i]), i) for i in range(n)]
    loader = DataLoader(data, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=0)
    batches = list(loader)
    assert len(loader) == len(batches) == (n // batch_size if drop_last else math.ceil(n / batch_size))
    sizes = [len(b[1]) for b in batches]
    assert all(s == batch_size for s in sizes[:-1])
    if drop_last:
        assert sum(sizes) == n - n % batch_size
    else:
        assert sum(sizes) == n
        assert sorted(np.concatenate([b[1] for b in batches]).tolist() if batches else []) == list(range(n))


# ---- shuffling, epochs, resuming ----------------------------------------------------------------------

def make_loader(verdict, seed, **kw):
    return create_dataloader_v1(verdict, batch_size=8, max_length=4, stride=4, shuffle=True, seed=seed, **kw)


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for p, q in zip(a, b) for u, v in zip(p, q))


def test_shuffle_is_reproducible_and_reshuffles_each_epoch(verdict):
    a, b, c = make_loader(verdict, 123), make_loader(verdict, 123), make_loader(verdict, 124)
    epochs_a = [collect(a) for _ in range(3)]
    epochs_b = [collect(b) for _ in range(3)]
    for ea, eb in zip(epochs_a, epochs_b):
        assert same(ea, eb)  # same seed -> same sequence of epochs
    assert not same(epochs_a[0], epochs_a[1]) and not same(epochs_a[1], epochs_a[2])  # a fresh epoch reshuffles
    assert not same(epochs_a[0], collect(c))  # another seed, another order
    ds = a.dataset
    first = np.concatenate([x for x, _ in epochs_a[0]])
    assert not np.array_equal(first, ds.input_ids[: len(first)])  # actually shuffled
    # every window at most once per epoch (drop_last drops 6 of the 1286)
    rows = {tuple(r) for r in first}
    assert len(first) == 1280 and rows <= {tuple(r) for r in ds.input_ids}
    np.testing.assert_array_equal(np.sort(a.order(5)), np.arange(len(ds)))


def test_seed_none_draws_a_recorded_seed(verdict):
    loader = make_loader(verdict, None)
    assert isinstance(loader.seed, int)
    again = make_loader(verdict, loader.seed)
    assert same(collect(loader), collect(again))
    with pytest.raises(ValueError, match="seed must be >= 0"):
        make_loader(verdict, -1)


def test_set_epoch_selects_the_order(verdict):
    a, b = make_loader(verdict, 7), make_loader(verdict, 7)
    epochs = [collect(a) for _ in range(4)]
    b.set_epoch(2)
    assert b.epoch == 2
    assert same(collect(b), epochs[2])
    assert same(collect(b), epochs[3])  # and continues from there
    b.set_epoch(1, start_batch=150)
    assert same(collect(b), epochs[1][150:])
    with pytest.raises(ValueError, match="past the end"):
        b.set_epoch(0, start_batch=161)


def test_resume_mid_epoch_from_state_dict(verdict):
    """A run interrupted in epoch 1 and resumed in a new process sees exactly the same batches."""
    a = make_loader(verdict, None)
    reference = [collect(a) for _ in range(3)]

    run = make_loader(verdict, a.seed)
    collect(run)  # epoch 0
    it = iter(run)
    seen = [tuple(next(it)) for _ in range(37)]  # epoch 1, interrupted after 37 batches
    state = run.state_dict()
    assert state == {"seed": a.seed, "epoch": 1, "batch": 37, "num_samples": 1286, "batch_size": 8}
    assert same(seen, reference[1][:37])

    resumed = make_loader(verdict, 999)  # the seed comes from the state
    resumed.load_state_dict(state)
    assert same(collect(resumed), reference[1][37:])
    assert same(collect(resumed), reference[2])
    assert resumed.state_dict()["epoch"] == 3 and resumed.state_dict()["batch"] == 0

    other = create_dataloader_v1(verdict, batch_size=4, max_length=4, stride=4, seed=1)
    with pytest.raises(ValueError, match="batch_size=8, this loader has batch_size=4"):
        other.load_state_dict(state)


def test_an_abandoned_pass_still_counts_as_an_epoch(verdict):
    """As with a seeded torch DataLoader: every iter() draws a new order, even if not read to the end."""
    a, b = make_loader(verdict, 5), make_loader(verdict, 5)
    next(iter(a))  # e.g. the book's evaluation reads a few batches of train_loader
    collect(b)
    assert same(collect(a), collect(b))  # both are now on epoch 1


def test_no_shuffle_order_is_fixed(verdict):
    loader = create_dataloader_v1(verdict, batch_size=8, max_length=4, stride=4, shuffle=False)
    assert same(collect(loader), collect(loader))


# ---- collate ------------------------------------------------------------------------------------------

def test_default_collate():
    items = [(np.array([1, 2], dtype=np.int32), 0, {"m": np.array([1.5])}),
             (np.array([3, 4]), 1, {"m": np.array([2.5])})]
    x, label, extra = default_collate(items)
    assert x.dtype == np.int64 and x.shape == (2, 2)
    assert label.dtype == np.int64 and label.tolist() == [0, 1]
    assert extra["m"].dtype == np.float64 and extra["m"].shape == (2, 1)
    with pytest.raises(ValueError, match=r"different shapes \[\(2,\), \(3,\)\].*collate_fn"):
        default_collate([np.zeros(2), np.zeros(3)])


def test_custom_collate_and_argument_errors():
    data = [np.arange(i + 1) for i in range(5)]

    def pad(items):
        return np.stack([np.pad(a, (0, 5 - len(a)), constant_values=-1) for a in items])

    batches = list(DataLoader(data, batch_size=2, collate_fn=pad))
    assert [b.shape for b in batches] == [(2, 5), (2, 5), (1, 5)]
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        DataLoader(data, batch_size=0)
    with pytest.raises(TypeError, match="dataset must have __len__ and __getitem__"):
        DataLoader(iter(data))
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        create_dataloader_v1("a b c d e f", num_workers=-1)


# ---- layering -----------------------------------------------------------------------------------------

LAYERS = [
    ("data", sorted(p.name for p in (PACKAGE / "data").glob("*.py")),
     {"numpy", "tiktoken", "regex", "tqdm"}),  # tqdm: the download progress bar
    ("tokenizer", ["__init__.py", "bpe.py", "gpt2.py", "pretokenize.py", "simple.py"],
     {"numpy", "tiktoken", "regex"}),
    ("assets", ["__init__.py"], set()),
]


@pytest.mark.parametrize("package, files, third_party", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_imports_stay_in_their_layer(package, files, third_party):
    """The ch. 2 pipeline works on ndarrays: it must not import the Tensor engine (nor torch)."""
    # errors and files are stdlib-only modules below every layer
    allowed_tinygpt = {"tinygpt.tokenizer", "tinygpt.assets", "tinygpt.errors", "tinygpt.files",
                       f"tinygpt.{package}"}
    for path in (PACKAGE / package / name for name in files):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                # resolve relative imports: level 1 is tinygpt.<package>, level 2 is tinygpt
                base = ".".join(["tinygpt", package][: 3 - node.level]) if node.level else ""
                if node.module is None:
                    names = [f"{base}.{a.name}" for a in node.names]
                else:
                    names = [f"{base}.{node.module}" if base else node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "tinygpt":
                    assert ".".join(name.split(".")[:2]) in allowed_tinygpt, f"{path} imports {name}"
                else:
                    assert top in sys.stdlib_module_names or top in third_party, f"{path} imports {name}"


def test_ch02_example_runs_offline():
    root = pathlib.Path(__file__).resolve().parents[1]  # the examples sit beside the tests
    script = root / "examples" / "ch02_text.py"
    out = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, cwd=root,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    # the book's counts: 5,145 BPE tokens (section 2.6), 1,130 words (section 2.3)
    assert "GPT-2 tokenizer: 5145 tokens" in out.stdout
    assert "vocabulary 1130 words" in out.stdout
    assert "-> input embeddings (8, 4, 256)" in out.stdout
