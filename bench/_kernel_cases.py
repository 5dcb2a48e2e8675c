"""The cases bench/kernels.py times: each yields (kernel, shape label, numba fn, numpy fn, torch fn,
matmul path) with argument-free functions. GPT-2 124M shapes (batch 2 x ctx 256), then the `small`
(emb 256) and `bench-tiny` (emb 64, vocab 512) configs of bench/_frameworks.py.

Runs in the bench's child process: NumPy, torch and tinygpt.kernels are passed in, already loaded
with the thread settings of that child.
"""
import itertools

B, T, C, H, V, FF = 2, 256, 768, 12, 50257, 3072  # GPT-2 124M, batch 2 x ctx 256
N = B * T


class Inputs:
    """Random inputs of the bench dtype, and their torch views; the libraries the cases call."""

    def __init__(self, np, torch, K, dtype):
        self.np, self.torch, self.K = np, torch, K
        self.F = torch.nn.functional
        self.nbk, self.ref = K.NUMBA, K.REFERENCE
        self.rng = np.random.default_rng(0)
        self.dtype = np.dtype(dtype)

    def arr(self, *shape, scale=1.0):
        return (self.rng.standard_normal(shape) * scale).astype(self.dtype)

    def tt(self, a):
        return self.torch.from_numpy(a)


# matmul: Linear x @ W.T (W (out, in)), input grad G @ W, weight grad X.T @ G, attention;
# how: "T" = b is a transposed view (as the engine passes W.T), "AT" = a is one
MATMULS = [
    ("qkv x@W.T", (N, C), (3 * C, C), "T"), ("ff1 x@W.T", (N, C), (FF, C), "T"),
    ("ff2 x@W.T", (N, FF), (C, FF), "T"), ("dW ff1 G.T@X", (FF, N), (N, C), "AT"),
    ("dX ff1 G@W", (N, FF), (FF, C), ""), ("lm head x@W.T", (N, C), (V, C), "T"),
    ("attn q@k.T", (B * H, T, 64), (B * H, T, 64), "T"), ("attn p@v", (B * H, T, T), (B * H, T, 64), ""),
    ("attn p.T@do", (B * H, T, T), (B * H, T, 64), "AT"),
    ("small q@k.T", (32, 128, 64), (32, 128, 64), "T"), ("small p@v", (32, 128, 128), (32, 128, 64), ""),
    ("bench-tiny q@k.T", (64, 64, 16), (64, 64, 16), "T"),
    ("bench-tiny p@v", (64, 64, 64), (64, 64, 16), ""),
    ("bench-tiny x@W.T", (1024, 64), (192, 64), "T")]
# decoding: M rows of x (M = 1: one sequence; 4, 16: a batched decode, one row per sequence) against
# a stored weight (out, in). A decode step streams all the weights from memory (GPT-2 124M: 495 MB,
# Qwen3-0.6B: 2.38 GB), so each call here takes the next of enough weight copies (>= 128 MB) to
# defeat the caches. GPT-2 124M's shapes, then Qwen3-0.6B's (K = 1024: q_proj, gate/up, the head)
DECODES = [("decode x@W.T", C, C, (1,)), ("decode ff1", FF, C, (1, 4, 16)), ("decode ff2", C, FF, (1,)),
           ("decode head", V, C, (1, 4, 16)), ("decode qwen3 q", 2048, 1024, (1, 4, 16)),
           ("decode qwen3 ff1", 3072, 1024, (1, 4, 16)), ("decode qwen3 head", 151936, 1024, (1, 4, 16))]
MATMULS += [(label + (f" M={m}" if m > 1 else ""), (m, k), (n, k), "T") for label, n, k, ms in DECODES
            for m in ms]
QUICK_MATMULS = ("qkv x@W.T", "dW ff1 G.T@X", "attn q@k.T", "attn p@v", "small p@v", "bench-tiny q@k.T",
                 "bench-tiny p@v", "decode ff1", "decode head", "decode ff1 M=4")


def matmul_cases(inp, quick):
    np, torch, gemm = inp.np, inp.torch, inp.K.gemm
    for label, sa, sb, how in MATMULS:
        if quick and label not in QUICK_MATMULS:
            continue
        a, b = inp.arr(*sa), inp.arr(*sb)
        if "T" in how.replace("AT", ""):
            b = b.swapaxes(-1, -2)        # a transposed view, as the engine passes it
        if how == "AT":
            a = inp.arr(*sa[:-2], sa[-1], sa[-2]).swapaxes(-1, -2)
        rule = "gemv" if gemm.uses_gemv(a, b) else "blas"
        ours = gemm.gemm_numba            # the teaching GEMM, for comparison
        if a.ndim == 2 and a.shape[0] <= gemm.GEMV_MAX_ROWS and b.T.flags.c_contiguous:
            split = inp.K.num_threads() > 1  # on several threads, split over the pool as the rule does
            ours = lambda a, b: gemm.gemv_numba(a, b.T, split=split)  # noqa: E731 - the few-row kernel
        if label.startswith("decode"):
            copies = [b] + [inp.arr(*sb).swapaxes(-1, -2) for _ in range((128 << 20) // b.nbytes)]
            nxt = itertools.cycle(range(len(copies))).__next__
            tcopies = [inp.tt(w) for w in copies]
            yield ("matmul", f"{label} {sa}@{b.shape}",
                   lambda a=a, ours=ours, w=copies, nxt=nxt: ours(a, w[nxt()]),
                   lambda a=a, w=copies, nxt=nxt: np.matmul(a, w[nxt()]),
                   lambda ta=inp.tt(a), w=tcopies, nxt=nxt: torch.matmul(ta, w[nxt()]), rule)
            continue
        ta, tb = inp.tt(a), inp.tt(b)
        yield ("matmul", f"{label} {sa}@{b.shape}", lambda a=a, b=b, ours=ours: ours(a, b),
               lambda a=a, b=b: np.matmul(a, b), lambda ta=ta, tb=tb: torch.matmul(ta, tb), rule)


def softmax_cases(inp):
    torch, nbk, ref = inp.torch, inp.nbk, inp.ref
    x = inp.arr(B, H, T, T, scale=3.0)
    y = ref["softmax_forward"](x)
    dy = inp.arr(B, H, T, T)
    tx, ty, tdy = inp.tt(x), inp.tt(y), inp.tt(dy)
    sh = f"{x.shape}"
    yield ("softmax fwd", sh, lambda: nbk["softmax_forward"](x), lambda: ref["softmax_forward"](x),
           lambda: torch.softmax(tx, -1), None)
    yield ("softmax bwd", sh, lambda: nbk["softmax_backward"](y, dy), lambda: ref["softmax_backward"](y, dy),
           lambda: torch._softmax_backward_data(tdy, ty, -1, ty.dtype), None)
    scale = 0.125
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    yc = ref["causal_softmax_forward"](x, scale)
    tyc = inp.tt(yc)
    yield ("causal softmax fwd", sh, lambda: nbk["causal_softmax_forward"](x, scale),
           lambda: ref["causal_softmax_forward"](x, scale),
           lambda: torch.softmax((tx * scale).masked_fill(mask, float("-inf")), -1), None)
    yield ("causal softmax bwd", sh, lambda: nbk["causal_softmax_backward"](yc, dy, scale),
           lambda: ref["causal_softmax_backward"](yc, dy, scale),
           lambda: torch._softmax_backward_data(tdy, tyc, -1, tyc.dtype) * scale, None)
    # the same fused with the attention dropout (p=0.1), against torch's masked softmax + dropout
    _, yd, keep = ref["causal_softmax_dropout_forward"](x, scale, 0.1, 3)
    tkeep = torch.from_numpy(keep)
    yield ("causal softmax+dropout fwd", sh, lambda: nbk["causal_softmax_dropout_forward"](x, scale, 0.1, 3),
           lambda: ref["causal_softmax_dropout_forward"](x, scale, 0.1, 3),
           lambda: torch.native_dropout(torch.softmax((tx * scale).masked_fill(mask, float("-inf")), -1),
                                        0.1, True), None)
    yield ("causal softmax+dropout bwd", sh,
           lambda: nbk["causal_softmax_dropout_backward"](yd, keep, dy, scale, 0.1),
           lambda: ref["causal_softmax_dropout_backward"](yd, keep, dy, scale, 0.1),
           lambda: torch._softmax_backward_data(torch.ops.aten.native_dropout_backward(tdy, tkeep, 1 / 0.9),
                                                tyc, -1, tyc.dtype) * scale, None)


def cached_attention_case(inp):
    # decoding: one new query per head against a 108-position KV cache (the middle of a 200-token
    # generation), the cache buffers sized for the context; torch: its fused attention on the prefix
    nbk, ref, scale = inp.nbk, inp.ref, 0.125
    qd, kc, vc = inp.arr(1, H, 1, 64), inp.arr(1, H, T, 64), inp.arr(1, H, T, 64)
    tqd, tkc, tvc = inp.tt(qd), inp.tt(kc[:, :, :108]), inp.tt(vc[:, :, :108])
    yield ("cached attention", f"{qd.shape} over 108 of {kc.shape}",
           lambda: nbk["cached_attention"](qd, kc, vc, 108, scale),
           lambda: ref["cached_attention"](qd, kc, vc, 108, scale),
           lambda: inp.F.scaled_dot_product_attention(tqd, tkc, tvc, scale=scale), None)
    # Qwen3-0.6B's grouped-query attention (16 query heads over 8 key/value heads of 128): one
    # decoding step over 40 cached positions, then prompts of 16 and 512 tokens, where the kernel's
    # per-row loops meet the batched products of the NumPy column (fast_modern.DECODE_TOKENS)
    for tq, length in ((1, 40), (16, 16), (512, 512)):
        q, k, v = inp.arr(1, 16, tq, 128), inp.arr(1, 8, 512, 128), inp.arr(1, 8, 512, 128)
        tq_, tk, tv = inp.tt(q), inp.tt(k[:, :, :length]), inp.tt(v[:, :, :length])
        yield ("cached attention gqa", f"{q.shape} over {length} of {k.shape}",
               lambda q=q, k=k, v=v, n=length: nbk["cached_attention"](q, k, v, n, 128 ** -0.5),
               lambda q=q, k=k, v=v, n=length: ref["cached_attention"](q, k, v, n, 128 ** -0.5),
               lambda a=tq_, b=tk, c=tv, causal=tq > 1: inp.F.scaled_dot_product_attention(
                   a, b, c, is_causal=causal, enable_gqa=True), None)


# the blocked causal attention (kernels/causal_attention.py) at training and prefill shapes:
# (b, H, G, T, hd, dropout). GPT-2 124M (batch 2 and 8 x ctx 256, and ctx 1024) trains with
# attention dropout 0.1; Qwen3-0.6B's prefill of 512 tokens (16 query heads over 8 of 128) has none
CAUSAL_ATTENTION = [(2, 12, 12, 256, 64, 0.1), (8, 12, 12, 256, 64, 0.1), (2, 12, 12, 1024, 64, 0.1),
                    (1, 16, 8, 512, 128, 0.0)]


def _composed_attention(np, K, q, k, v, p):
    """Today's composed route (the book's MultiHeadAttention / grouped_query_attention): batched
    np.matmul, the fused causal softmax + dropout kernel, np.matmul; returns what backward needs."""
    b, h, t, hd = q.shape
    g = k.shape[1]
    qg, kg, vg = q.reshape(b, g, h // g, t, hd), k[:, :, None], v[:, :, None]
    s = np.matmul(qg, kg.swapaxes(-1, -2))
    if p:
        z, y, keep = K.causal_softmax_dropout_forward(s, hd ** -0.5, p, 3)
    else:
        z = y = K.causal_softmax_forward(s, hd ** -0.5)
        keep = None
    return np.matmul(z, vg), (qg, kg, vg, z, y, keep)


def _composed_attention_bwd(np, K, saved, dctx, p):
    qg, kg, vg, z, y, keep = saved
    scale = qg.shape[-1] ** -0.5
    dz = np.matmul(dctx, vg.swapaxes(-1, -2))
    dv = np.matmul(z.swapaxes(-1, -2), dctx).sum(axis=2)
    ds = (K.causal_softmax_dropout_backward(y, keep, dz, scale, p) if p
          else K.causal_softmax_backward(y, dz, scale))
    return np.matmul(ds, kg), np.matmul(ds.swapaxes(-1, -2), qg).sum(axis=2), dv


def causal_attention_cases(inp, quick):
    """Forward and backward: "numba" the blocked kernel, "numpy" the composed route the engine ran
    before it (np.matmul + the causal softmax kernels), "torch" scaled_dot_product_attention."""
    np, torch, K, nbk = inp.np, inp.torch, inp.K, inp.nbk
    for b, h, g, t, hd, p in CAUSAL_ATTENTION[:2 if quick else 4]:
        # q, k, v as the fast classes pass them: (b, heads, T, hd) views of (b, T, heads, hd) arrays
        q = inp.arr(b, t, h, hd).transpose(0, 2, 1, 3)
        k, v = (inp.arr(b, t, g, hd).transpose(0, 2, 1, 3) for _ in range(2))
        out, lse = nbk["causal_attention_forward"](q, k, v, hd ** -0.5, p, 3)
        dout = inp.arr(*out.shape)
        ctx, saved = _composed_attention(np, K, q, k, v, p)
        dctx = np.ascontiguousarray(dout.transpose(0, 2, 1, 3)).reshape(ctx.shape)
        tq, tk, tv = (inp.tt(np.ascontiguousarray(a)).requires_grad_() for a in (q, k, v))
        tout = inp.F.scaled_dot_product_attention(tq, tk, tv, dropout_p=p, is_causal=True, enable_gqa=g < h)
        tdout = inp.tt(np.ascontiguousarray(dout.transpose(0, 2, 1, 3)))
        sh = f"b{b} H{h} G{g} T{t} hd{hd} p{p}"
        yield ("causal attention fwd", sh,
               lambda q=q, k=k, v=v, p=p, hd=hd: nbk["causal_attention_forward"](q, k, v, hd ** -0.5, p, 3),
               lambda q=q, k=k, v=v, p=p: _composed_attention(np, K, q, k, v, p),
               lambda a=tq, b_=tk, c=tv, p=p, gqa=g < h: inp.F.scaled_dot_product_attention(
                   a.detach(), b_.detach(), c.detach(), dropout_p=p, is_causal=True, enable_gqa=gqa), None)
        yield ("causal attention bwd", sh,
               lambda q=q, k=k, v=v, o=out, l=lse, d=dout, p=p, hd=hd: nbk["causal_attention_backward"](
                   q, k, v, o, l, d, hd ** -0.5, p, 3),
               lambda s=saved, d=dctx, p=p: _composed_attention_bwd(np, K, s, d, p),
               lambda o=tout, d=tdout, ins=(tq, tk, tv): torch.autograd.grad(o, ins, d, retain_graph=True),
               None)


def layernorm_cases(inp, rows, d):
    torch, nbk, ref = inp.torch, inp.nbk, inp.ref
    x, w, b, dy = inp.arr(rows, d, scale=2.0), inp.arr(d), inp.arr(d), inp.arr(rows, d)
    _, mean, rstd = ref["layernorm_forward"](x, w, b, 1e-5)
    tx, tw, tb, tdy = inp.tt(x), inp.tt(w), inp.tt(b), inp.tt(dy)
    _, tm, tr = torch.native_layer_norm(tx, (d,), tw, tb, 1e-5)
    sh = f"({rows}, {d})"
    yield ("layernorm fwd", sh, lambda: nbk["layernorm_forward"](x, w, b, 1e-5),
           lambda: ref["layernorm_forward"](x, w, b, 1e-5),
           lambda: torch.native_layer_norm(tx, (d,), tw, tb, 1e-5), None)
    yield ("layernorm bwd", sh, lambda: nbk["layernorm_backward"](dy, x, w, mean, rstd),
           lambda: ref["layernorm_backward"](dy, x, w, mean, rstd),
           lambda: torch.ops.aten.native_layer_norm_backward(tdy, tx, (d,), tm, tr, tw, tb,
                                                              [True, True, True]), None)


def gelu_cases(inp, rows, d):
    nbk, ref = inp.nbk, inp.ref
    x, dy = inp.arr(rows, d, scale=2.0), inp.arr(rows, d)
    tx, tdy = inp.tt(x), inp.tt(dy)
    sh = f"({rows}, {d})"
    yield ("gelu fwd", sh, lambda: nbk["gelu_forward"](x), lambda: ref["gelu_forward"](x),
           lambda: inp.F.gelu(tx, approximate="tanh"), None)
    yield ("gelu bwd", sh, lambda: nbk["gelu_backward"](x, dy), lambda: ref["gelu_backward"](x, dy),
           lambda: inp.torch.ops.aten.gelu_backward(tdy, tx, approximate="tanh"), None)


def modern_cases(inp, rows, d, hidden):
    """Qwen3/Llama's RMSNorm and SiLU kernels, at Qwen3-0.6B's width over a 512-token prompt."""
    nbk, ref, F = inp.nbk, inp.ref, inp.F
    x, w, dy = inp.arr(rows, d), inp.arr(d), inp.arr(rows, d)
    _, rstd = ref["rmsnorm_forward"](x, w, 1e-6)
    tx, tw = inp.tt(x), inp.tt(w)
    txg, twg = tx.clone().requires_grad_(), tw.clone().requires_grad_()
    tout, tdy = F.rms_norm(txg, (d,), twg, 1e-6), inp.tt(dy)
    sh = f"({rows}, {d})"
    yield ("rmsnorm fwd", sh, lambda: nbk["rmsnorm_forward"](x, w, 1e-6),
           lambda: ref["rmsnorm_forward"](x, w, 1e-6), lambda: F.rms_norm(tx, (d,), tw, 1e-6), None)
    yield ("rmsnorm bwd", sh, lambda: nbk["rmsnorm_backward"](dy, x, w, rstd),
           lambda: ref["rmsnorm_backward"](dy, x, w, rstd),
           lambda: inp.torch.autograd.grad(tout, (txg, twg), tdy, retain_graph=True), None)
    h, dh = inp.arr(rows, hidden, scale=4.0), inp.arr(rows, hidden)
    th, tdh = inp.tt(h), inp.tt(dh)
    sh = f"({rows}, {hidden})"
    yield ("silu fwd", sh, lambda: nbk["silu_forward"](h), lambda: ref["silu_forward"](h),
           lambda: F.silu(th), None)
    yield ("silu bwd", sh, lambda: nbk["silu_backward"](h, dh), lambda: ref["silu_backward"](h, dh),
           lambda: inp.torch.ops.aten.silu_backward(tdh, th), None)


def cross_entropy_cases(inp, rows, vocab):
    np, torch, nbk, ref = inp.np, inp.torch, inp.nbk, inp.ref
    x = inp.arr(rows, vocab, scale=2.0)
    tg = inp.rng.integers(0, vocab, rows)
    tg[::7] = -100
    _, lse = ref["cross_entropy_forward"](x, tg, -100)
    tx, ttg = inp.tt(x), inp.tt(tg)
    ls = torch.log_softmax(tx, -1)
    _, total_weight = torch.ops.aten.nll_loss_forward(ls, ttg, None, 1, -100)
    gout = torch.ones((), dtype=ls.dtype)
    out = np.empty_like(x)  # the engine reuses its logits-gradient buffer (out=)
    sh = f"({rows}, {vocab})"
    yield ("cross-entropy fwd", sh, lambda: nbk["cross_entropy_forward"](x, tg, -100),
           lambda: ref["cross_entropy_forward"](x, tg, -100),
           lambda: inp.F.cross_entropy(tx, ttg, ignore_index=-100), None)
    yield ("cross-entropy bwd", sh,
           lambda: nbk["cross_entropy_backward"](x, tg, lse, -100, 1.0, out=out),
           lambda: ref["cross_entropy_backward"](x, tg, lse, -100, 1.0, out=out),
           lambda: torch._log_softmax_backward_data(
               torch.ops.aten.nll_loss_backward(gout, ls, ttg, None, 1, -100, total_weight),
               ls, -1, ls.dtype),
           None)


def adamw_case(inp, quick):
    # AdamW over GPT-2 124M's tensors, book layout (untied out_head, no qkv bias: 163M params);
    # --quick: one transformer block + pos_emb
    np, torch = inp.np, inp.torch
    block = [(C, C)] * 3 + [(C, C), (C,), (FF, C), (FF,), (C, FF), (C,), (C,), (C,), (C,), (C,)]
    shapes = ([(V, C), (1024, C)] + block * 12 + [(C,), (C,), (V, C)]) if not quick else block + [(1024, C)]
    params = [inp.arr(*s) for s in shapes]
    grads = [inp.arr(*s) for s in shapes]
    first_moments = [np.zeros(s, inp.dtype) for s in shapes]
    second_moments = [np.zeros(s, inp.dtype) for s in shapes]
    n_par = sum(p.size for p in params)
    tparams = [torch.nn.Parameter(inp.tt(p.copy())) for p in params]
    for tp, g in zip(tparams, grads):
        tp.grad = inp.tt(g)
    opt = torch.optim.AdamW(tparams, lr=1e-4, weight_decay=0.1)
    opt.step()

    def adam(fn):
        for p, g, m, v in zip(params, grads, first_moments, second_moments):
            fn(p, g, m, v, 3, 1e-4, 0.9, 0.999, 1e-8, 0.1)

    yield ("adamw", f"{n_par / 1e6:.1f}M params, {len(shapes)} tensors", lambda: adam(inp.nbk["adamw_step"]),
           lambda: adam(inp.ref["adamw_step"]), opt.step, None)


def embedding_and_dropout_cases(inp):
    torch, nbk, ref = inp.torch, inp.nbk, inp.ref
    idx = inp.rng.integers(0, V, (B, T))
    g = inp.arr(B, T, C)
    tidx, tg_ = inp.tt(idx), inp.tt(g)
    yield ("embedding bwd", f"idx {idx.shape}, ({V}, {C})", lambda: nbk["embedding_backward"](idx, g, V),
           lambda: ref["embedding_backward"](idx, g, V),
           lambda: torch.ops.aten.embedding_dense_backward(tg_, tidx, V, -1, False), None)
    # dropout p=0.1 on the attention weights and on the residual stream (torch: its fused native op)
    for shape in ((B, H, T, T), (B, T, C)):
        x = inp.arr(*shape)
        keep = ref["dropout_forward"](x, 0.1, 1)[1]
        tx, tkeep = inp.tt(x), inp.tt(keep)
        yield ("dropout fwd", f"{shape}", lambda x=x: nbk["dropout_forward"](x, 0.1, 7),
               lambda x=x: ref["dropout_forward"](x, 0.1, 7),
               lambda tx=tx: torch.native_dropout(tx, 0.1, True), None)
        yield ("dropout bwd", f"{shape}", lambda x=x, keep=keep: nbk["dropout_backward"](x, keep, 0.1),
               lambda x=x, keep=keep: ref["dropout_backward"](x, keep, 0.1),
               lambda tx=tx, tkeep=tkeep: torch.ops.aten.native_dropout_backward(tx, tkeep, 1 / 0.9), None)


def cases(quick, np, torch, K, dtype):
    """Every case in bench order; --quick keeps the first shape of each row kernel."""
    inp = Inputs(np, torch, K, dtype)
    yield from matmul_cases(inp, quick)
    yield from softmax_cases(inp)
    yield from cached_attention_case(inp)
    yield from causal_attention_cases(inp, quick)
    # GPT-2 124M, then the small (emb 256) and bench-tiny (emb 64, vocab 512) configs
    for rows, d in ((N, C), (1024, 256), (1024, 64))[:1 if quick else 3]:
        yield from layernorm_cases(inp, rows, d)
    for rows, d in ((N, FF), (1024, 1024))[:1 if quick else 2]:
        yield from gelu_cases(inp, rows, d)
    yield from modern_cases(inp, 512, 1024, 3072)
    for rows, vocab in ((N, V), (1024, V), (1024, 512))[:1 if quick else 3]:
        yield from cross_entropy_cases(inp, rows, vocab)
    yield from adamw_case(inp, quick)
    yield from embedding_and_dropout_cases(inp)
