"""hwbed: hardware co-design simulator and FPGA evaluation harness for compressed CNNs."""

__version__ = "0.1.0"
