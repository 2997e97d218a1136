"""The integer dataflow graph: tensor types, the graph, its builder, checks and reference."""
