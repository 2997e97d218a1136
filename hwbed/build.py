"""``python -m hwbed.build --target NAME [...]``: a network to everything a board build needs.

With no ``--model``/``--checkpoint`` it trains the embedded default (resnet20-xnor on the
digits data, cached in runs/ after the first run), then exports, lowers, folds, estimates,
writes the FINN folder and the deploy package, and verifies the simulator against the twin.
"""

from __future__ import annotations

import argparse
import sys

from hwbed.fpga.build_flow import PRESETS, STEPS, BuildConfig, BuildError, build


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hwbed.build", description=__doc__.splitlines()[0])
    p.add_argument("--target", default="pynq-z2", help="board (default pynq-z2)")
    p.add_argument("--model", help="model spec (default resnet20-xnor)")
    p.add_argument("--checkpoint", help="trained checkpoint to build")
    p.add_argument("--data", help="data set (default digits; cnv: synthetic 3x32x32)")
    p.add_argument("--weights", choices=("trained", "random"), default="trained")
    p.add_argument("--folding", help="FINN folding config JSON to apply unchanged")
    p.add_argument("--target-fps", type=float, help="fold to reach this frame rate")
    p.add_argument("--out", help="output folder (default build/<model>-<target>)")
    p.add_argument("--finn", action="store_true", help="run FINN on the emitted folder")
    p.add_argument("--preset", default="estimate_only", choices=sorted(PRESETS))
    p.add_argument("--start-step", choices=list(STEPS))
    p.add_argument("--stop-step", choices=list(STEPS))
    p.add_argument("--epochs", type=int, default=30, help="training epochs when training")
    p.add_argument("--verify-n", type=int, default=64, help="images checked in the verify step")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = BuildConfig(**vars(args))
    try:
        out = build(cfg)
    except (BuildError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"build folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
