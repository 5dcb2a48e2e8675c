"""tinygpt.viz: the autograd graph as DOT (one node per recorded op and per leaf, collapsed per
module with depth=), draw_graph's image or .dot fallback, and per-layer activation statistics."""
import re
import shutil

import numpy as np
import pytest

import tinygpt as tg
from helpers import assert_close, functions_in_graph
from tinygpt import nn, viz
from tinygpt.nn import functional as F

SMALL = {"vocab_size": 97, "context_length": 16, "emb_dim": 24, "n_heads": 4, "n_layers": 2,
         "drop_rate": 0.0, "qkv_bias": False}


def mlp_loss():
    tg.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = tg.randn(5, 2), np.array([0, 1, 2, 0, 1])
    return model, x, y, F.cross_entropy(model(x), y)


def nodes(dot):
    return re.findall(r'^  n(\d+) \[label="([^"]*)"', dot, re.M)


def test_to_dot_has_one_node_per_op_and_per_leaf():
    model, x, y, loss = mlp_loss()
    dot = viz.to_dot(loss, params=dict(model.named_parameters()))
    labels = [label.split("\\n")[0] for _, label in nodes(dot)]
    assert sorted(labels) == sorted(["input", "0.weight", "0.bias", "2.weight", "2.bias",
                                     "LinearFn", "ReluFn", "LinearFn", "CrossEntropy"])
    assert {c.__name__ for c in functions_in_graph(loss)} == {"LinearFn", "ReluFn", "CrossEntropy"}
    assert len(re.findall(r"->", dot)) == 8  # x, W, b -> Linear -> Relu; Relu, W, b -> Linear -> loss
    number = {label.split("\\n")[0]: n for n, label in nodes(dot)}
    relu, head = number["ReluFn"], number["CrossEntropy"]
    assert f"n{relu} -> " in dot and f"-> n{head};" in dot and f"n{head} -> " not in dot, \
        "edges run the way the data flows"
    loss.backward()
    assert dot == viz.to_dot(loss, params=dict(model.named_parameters())), "backward keeps the graph drawable"


def test_depth_collapses_module_calls():
    tg.manual_seed(0)
    model = tg.GPTModel(SMALL).eval()
    with viz.record_modules(model) as calls:
        logits = model(np.array([[1, 2, 3]]))
    full = nodes(viz.to_dot(logits))
    by_block = [label for _, label in nodes(viz.to_dot(logits, depth=2, modules=calls))]
    assert len(full) > 40 and len(by_block) < 15, (len(full), by_block)
    names = [label.split("\\n")[0] for label in by_block]
    for name in ("tok_emb", "pos_emb", "trf_blocks.0", "trf_blocks.1", "final_norm", "out_head"):
        assert name in names, names
    assert not any("Softmax" in label for label in by_block)
    top = [label.split("\\n")[0] for _, label in nodes(viz.to_dot(logits, depth=1, modules=calls))]
    # GPTModel loops over trf_blocks without calling it: the blocks are the outermost calls there
    assert "trf_blocks.0" in top and not any(name.startswith("trf_blocks.0.") for name in top)
    by_layer = [label.split("\\n")[0] for _, label in nodes(viz.to_dot(logits, depth=3, modules=calls))]
    assert "trf_blocks.1.att" in by_layer and "trf_blocks.1" not in by_layer
    with pytest.raises(tg.errors.InputError, match="record_modules"):
        viz.to_dot(logits, depth=1)


def test_draw_graph_writes_dot_without_graphviz(tmp_path, monkeypatch):
    model, x, y, loss = mlp_loss()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.warns(RuntimeWarning, match=r"dot -Tsvg .*mlp.dot -o .*mlp.svg"):
        written = viz.draw_graph(loss, tmp_path / "mlp.svg")
    assert written == tmp_path / "mlp.dot"
    assert written.read_text() == viz.to_dot(loss)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")
def test_draw_graph_renders_an_image_with_graphviz(tmp_path):
    model, x, y, loss = mlp_loss()
    written = viz.draw_graph(loss, tmp_path / "mlp.svg", params=dict(model.named_parameters()))
    assert written == tmp_path / "mlp.svg" and "<svg" in written.read_text()


def test_activation_stats_of_a_gpt_and_the_plot(tmp_path):
    tg.manual_seed(0)
    model = tg.GPTModel(SMALL)
    ids = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    layers = viz.activation_stats(model, ids, targets=np.roll(ids, -1, axis=1))
    by_name = {layer.name: layer for layer in layers}
    for name in ("tok_emb", "trf_blocks.0.att", "trf_blocks.1.ff.layers.1", "final_norm", "out_head"):
        assert by_name[name].gradients is not None, name
    assert by_name["trf_blocks.0.ff.layers.1"].kind == "GELU"
    assert all(p.grad is None for p in model.parameters()), "activation_stats leaves .grad as it was"
    assert not any(m._forward_hooks for m in model.modules()), "and removes its hooks"
    path = viz.plot_activation_stats(layers, tmp_path / "stats.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_activation_stats_values_are_the_layer_outputs_and_their_gradients():
    model, x, y, _ = mlp_loss()
    model = model.to(np.float64)
    x = x.to(np.float64)
    layers = viz.activation_stats(model, x, targets=y)
    assert [(layer.name, layer.kind) for layer in layers] == [("0", "Linear"), ("1", "ReLU"), ("2", "Linear")]
    logits = model(x).data
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dlogits = (p - np.eye(3)[y]) / len(y)  # d mean cross-entropy / d logits
    assert_close(np.sort(layers[2].activations), np.sort(logits.reshape(-1)), what="logits")
    assert_close(np.sort(layers[2].gradients), np.sort(dlogits.reshape(-1)), what="gradient of the logits")
    hidden = np.maximum(x.data @ model[0].weight.data.T + model[0].bias.data, 0)
    assert layers[1].zero_fraction == np.mean(hidden == 0) and layers[1].mean == pytest.approx(hidden.mean())


@pytest.mark.parametrize("n_layers", [1, 6])
def test_both_panels_have_a_whole_legend_that_covers_no_curve(n_layers):
    """A GPT has dozens of layers: each panel's legend names every layer (activation std on the
    left, gradient std on the right) and lies inside the figure, below its panel."""
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    tg.manual_seed(0)
    model = tg.GPTModel({**SMALL, "n_layers": n_layers})
    ids = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    layers = viz.activation_stats(model, ids, targets=np.roll(ids, -1, axis=1))
    fig = viz.stats.activation_stats_figure(layers)
    FigureCanvasAgg(fig).draw()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(legends) == 2 and len(panels) == 2
    for legend, panel, spread in zip(legends, panels, ("std", "grad_std")):
        texts = [t.get_text() for t in legend.get_texts()]
        assert texts == [f"{layer.name} (std {getattr(layer, spread):.2g})" for layer in layers]
        box, figure_box = legend.get_window_extent(), fig.bbox
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1, (box, figure_box)
        assert figure_box.y0 <= box.y0 and box.y1 <= figure_box.y1, (box, figure_box)
        assert box.y1 < panel.get_window_extent().y0  # below the panel, not over its curves
