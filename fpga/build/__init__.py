"""The build (``python -m hwbed.build``): its steps, from a checkpoint to a board's folder."""
