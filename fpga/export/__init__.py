"""Brevitas -> QONNX export and the executors of QONNX: onnxruntime, and qonnx on the graph."""
