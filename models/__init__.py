"""Architectures, compression recipes on Brevitas, data sets, training, checkpoints and cost."""
