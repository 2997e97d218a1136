"""QONNX export, integer dataflow graph, boards, folding, estimates, FINN hand-off, deploy."""
