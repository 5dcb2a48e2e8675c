"""The models the benches train, built the same way in tinygpt and in the book's PyTorch code.

`CONFIGS[name]` = (GPT config, batch size). One training step = zero_grad, forward, cross-entropy,
backward, AdamW step (lr 4e-4, weight decay 0.1, as in the book's chapter 5). Nothing here imports
tinygpt, NumPy or torch at module level (a script sets thread variables first).
"""
import time

# The bench configurations. `bench-tiny` is named apart from the CLI preset `tiny`
# (tinygpt/train/pretrain.py PRESETS["tiny"], vocab 50257): they are different models.
CONFIGS = {
    "book-124M": ({"vocab_size": 50257, "context_length": 256, "emb_dim": 768, "n_heads": 12,
                   "n_layers": 12, "drop_rate": 0.1, "qkv_bias": False}, 2),
    "small": ({"vocab_size": 50257, "context_length": 128, "emb_dim": 256, "n_heads": 4,
               "n_layers": 4, "drop_rate": 0.1, "qkv_bias": False}, 8),
    "bench-tiny": ({"vocab_size": 512, "context_length": 64, "emb_dim": 64, "n_heads": 4,
                    "n_layers": 2, "drop_rate": 0.0, "qkv_bias": False}, 16),
}
LR, WEIGHT_DECAY = 4e-4, 0.1


def make_tinygpt(cfg, seed, train_mode=True):
    from tinygpt import GPTModel, manual_seed, tune_malloc
    from tinygpt.optim import AdamW
    tune_malloc()  # as the CLI and the examples do (process-wide: see tinygpt/core/malloc.py)
    manual_seed(seed)
    model = GPTModel(cfg)
    model.train(train_mode)
    opt = AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    return model, opt


def tinygpt_fns(model, opt, x, y):
    from tinygpt import no_grad
    from tinygpt.train import calc_loss_batch

    def step():
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = calc_loss_batch(x, y, model)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2

    def evaluate():
        with no_grad():
            return calc_loss_batch(x, y, model).item()
    return step, evaluate


def make_torch(cfg, seed, state_dict=None, train_mode=True):
    import torch
    from llms_from_scratch import ch04
    torch.manual_seed(seed)
    model = ch04.GPTModel(cfg)
    if state_dict is not None:
        import numpy as np
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()})
    model.train(train_mode)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    return model, opt


def torch_fns(model, opt, x, y):
    import torch
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def loss_fn():  # the book's calc_loss_batch
        logits = model(xt)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), yt.flatten())

    def step():
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2

    def evaluate():
        with torch.no_grad():
            return loss_fn().item()
    return step, evaluate


def batch(cfg, bs, seed):
    import numpy as np
    rng = np.random.default_rng(seed)
    shape = (bs, cfg["context_length"])
    return rng.integers(0, cfg["vocab_size"], shape), rng.integers(0, cfg["vocab_size"], shape)
