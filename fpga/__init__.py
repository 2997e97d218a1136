"""QONNX export, lowering to the integer dataflow graph, boards, folding, estimates, FINN hand-off."""
