"""The lowering: a Brevitas twin -> the exact integer dataflow graph (``hwbed.ir``)."""
