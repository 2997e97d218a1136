"""``python -m hwbed.report STORE [--builds DIR ...] --out DIR``: the study's views of a store.

Writes, under ``--out`` (default ``runs/report/<store name>``): the on-device vs float table,
the cost table, the study's tables (CSV and Markdown each), PGD curves, stress–strain graphs,
box-plots, CAM heat maps and robustness vs cost (PNG each, with their tables), and
``index.html``, one self-contained page holding them all. Prints the on-device vs float table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hwbed.cli import command
from hwbed.report.frame import ReportError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hwbed.report", description=__doc__.splitlines()[0])
    p.add_argument("store", metavar="STORE", help="result store folder (python -m hwbed.attack)")
    p.add_argument(
        "--builds",
        nargs="+",
        default=[],
        metavar="DIR",
        help="build folders for the cost table (besides those the store's cells name)",
    )
    p.add_argument("--out", help="output folder (default runs/report/<store name>)")
    p.add_argument(
        "--cell",
        help="the cell of the robustness-vs-cost plot: ATTACK[:EPS[:ITERATIONS]], e.g. fgsm:8 "
        "(EPS as the grid gives it; default: the worst case over all attacks at the threat "
        "model most models share)",
    )
    p.add_argument(
        "--strain-threshold",
        type=float,
        default=0.5,
        help="strain at which a stress–strain curve breaks (default 0.5: half the clean "
        "accuracy lost)",
    )
    p.add_argument("--cam-images", type=int, default=4, help="test images for CAM (default 4)")
    p.add_argument("--no-cam", dest="cam", action="store_false", help="skip the CAM heat maps")
    p.add_argument("--data-dir", help="folder or archive of cifar10/imagenet (for CAM images)")
    p.add_argument(
        "--screenshot",
        action="store_true",
        help="also render index.html with headless Chromium to index.png",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from hwbed.report.run import ReportConfig, write_report

    try:
        config = ReportConfig(
            store=Path(args.store),
            out=Path(args.out) if args.out else Path("runs/report") / Path(args.store).name,
            builds=[Path(b) for b in args.builds],
            cell=args.cell,
            strain_threshold=args.strain_threshold,
            cam_images=args.cam_images if args.cam else 0,
            data_dir=args.data_dir,
            screenshot=args.screenshot,
            progress=args.progress,
        )
        config.check()
        t0 = time.perf_counter()
        result = write_report(config)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.printed)
    print(f"\n{len(result.files)} files in {config.out} ({time.perf_counter() - t0:.1f} s)")
    print(f"page: {result.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
