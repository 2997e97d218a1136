"""``python -m hwbed.verify SOURCE [--n N] [--data NAME]``: do all execution paths agree?

SOURCE is a build folder (``graph.json`` + ``.npz``, optionally ``model.pt``), a saved graph
or a checkpoint. N images (``--data``; by default the graph's data set, else digits, and
random uint8 pixels where that does not fit the graph's input; ``--data random`` asks for
them) run through the fast path, the slice-level path, qonnx's execution of the rendered
graph, the numpy reference and, when a checkpoint is known, the Brevitas twin. Each path is
compared with the reference: % of images with identical scores and % with identical top-1.
Exit status: 0 when all agree, 1 when a path that must be exact (fast, slice, qonnx-render)
differs, 2 on a bad input (one ``error:`` line), 3 when only the twin differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hwbed.cli import InputError, add_debug, command
from hwbed.fpga.build.sources import graph_of
from hwbed.fpga.build.verify import RANDOM, graph_twin, input_pixels, verify


def check_data(name: str | None) -> None:
    """Refuse a ``--data`` name that is neither a known data set nor ``random``."""
    from hwbed.models.data import available_datasets

    known = (*available_datasets(), RANDOM)
    if name is not None and name not in known:
        raise InputError(f"unknown data set; known: {', '.join(known)}", f"--data {name}")


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hwbed.verify", description=__doc__.split("\n")[0]
    )
    parser.add_argument("source", help="build folder, saved graph (.json) or checkpoint (.pt)")
    parser.add_argument("--n", type=int, default=100, help="images (default 100)")
    parser.add_argument("--data", help="data set, or random (default: the graph's, else digits)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slice-n", type=int, default=16, help="images for the slice path")
    parser.add_argument("--qonnx-n", type=int, default=8, help="images for qonnx (slow)")
    add_debug(parser)
    args = parser.parse_args(argv)
    counts = {"--n": (args.n, 1), "--slice-n": (args.slice_n, 0), "--qonnx-n": (args.qonnx_n, 0)}
    for flag, (value, least) in counts.items():
        if value < least:
            raise InputError(f"must be at least {least}", f"{flag} {value}")
    check_data(args.data)
    source = Path(args.source)
    if not source.exists() and not source.with_suffix(".json").is_file():
        raise InputError("no such build folder, graph or checkpoint", source)
    graph = graph_of(source)
    twin = graph_twin(graph)  # a missing or corrupt checkpoint fails now, not after the paths
    pixels, origin = input_pixels(graph, args.n, args.data, args.seed, strict=True)
    report = verify(graph, pixels, args.slice_n, args.qonnx_n, twin)
    print(f"{graph.meta.get('model', 'graph')}: {len(pixels)} images ({origin})")
    print(report.table())
    return report.status


if __name__ == "__main__":
    sys.exit(main())
