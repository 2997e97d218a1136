"""Bit-accurate DSP48 simulator: slice model, layer mapping, fast exact execution,
RTL cross-check."""
