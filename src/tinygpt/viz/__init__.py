"""Pictures of what the engine does: the autograd graph (`to_dot`, `draw_graph`, collapsed per
module with `record_modules` and `depth=`) and per-layer activation and gradient statistics
(`activation_stats`, `plot_activation_stats`). Loaded on first use of `tinygpt.viz`."""
from .attention import attention_heatmap, attention_weights, inspect_position, next_token_table
from .graph import draw_graph, graph_tensors, record_modules, to_dot
from .stats import LayerStats, activation_stats, plot_activation_stats

__all__ = ["to_dot", "draw_graph", "graph_tensors", "record_modules", "activation_stats",
           "plot_activation_stats", "LayerStats",
           "attention_heatmap", "attention_weights", "inspect_position", "next_token_table"]
