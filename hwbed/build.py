"""``python -m hwbed.build --target NAME [...]``: a network to everything a board build needs.

With no ``--model``/``--checkpoint`` it trains the embedded default (resnet20-xnor on the
digits data, cached in runs/ after the first run), then exports, lowers, folds, estimates,
writes the FINN folder and the deploy package, and verifies the simulator against the twin.
``--checkpoint FLOAT.pt --quantize w8a8`` builds the deployed 8-bit version of a float
(vanilla, distilled or pruned) network: post-training quantization calibrated on its training
split, ``--finetune-epochs N`` of quantization-aware fine-tuning, and a summary comparing the
float and deployed test accuracy.

Exit status: 0 built; 1 built but the design does not fit the board (one ``error:`` line
with the overrun; no FINN folder); 2 a bad input or a failed step (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import logging
import sys

from hwbed.cli import add_debug, command
from hwbed.fpga.build.flow import PRESETS, STEPS, BuildConfig, DoesNotFitError, build

DOES_NOT_FIT = 1
"""Exit status of a build whose design exceeds the board."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hwbed.build", description=__doc__.splitlines()[0])
    p.add_argument("--target", default="pynq-z2", help="board (default pynq-z2)")
    p.add_argument("--model", help="model spec (default resnet20-xnor)")
    p.add_argument("--checkpoint", help="trained checkpoint to build")
    p.add_argument("--data", help="data set (default digits; cnv: synthetic 3x32x32)")
    p.add_argument("--weights", choices=("trained", "random"), default="trained")
    p.add_argument(
        "--quantize",
        metavar="wWaA",
        help="build the deployed version of a float network (--checkpoint, or a float --model "
        "trained first) at this precision, e.g. w8a8: post-training quantization calibrated on "
        "its training split",
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=0,
        help="epochs of quantization-aware fine-tuning after --quantize (default 0)",
    )
    p.add_argument(
        "--calibration-images",
        type=int,
        default=1024,
        help="training images that calibrate --quantize's scales (default 1024)",
    )
    p.add_argument("--folding", help="FINN folding config JSON to apply unchanged")
    p.add_argument("--target-fps", type=float, help="fold to reach this frame rate")
    p.add_argument("--out", help="output folder (default build/<model>-<target>)")
    p.add_argument("--finn", action="store_true", help="run FINN on the emitted folder")
    p.add_argument("--preset", default="estimate_only", choices=sorted(PRESETS))
    p.add_argument("--start-step", choices=list(STEPS))
    p.add_argument("--stop-step", choices=list(STEPS))
    p.add_argument("--epochs", type=int, default=30, help="training epochs when training")
    p.add_argument(
        "--force",
        action="store_true",
        help="retrain the cached run (runs/<spec>-<data>-s<seed>) if its settings differ",
    )
    p.add_argument("--verify-n", type=int, default=64, help="images checked in the verify step")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="show hwbed's notes (e.g. FINN's folding ones)"
    )
    return add_debug(p)


class _Notes(logging.Handler):
    """hwbed's INFO records as ``info: ...`` lines (warnings go to the usual handler)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            print(f"info: {record.getMessage()}", file=sys.stderr, flush=True)


@command
def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    args.pop("debug", None)
    verbose = args.pop("verbose")
    cfg = BuildConfig(**args)
    logger, notes = logging.getLogger("hwbed"), _Notes()
    level = logger.level
    if verbose and not logger.isEnabledFor(logging.DEBUG):  # --debug shows them already
        logger.addHandler(notes)
        logger.setLevel(logging.INFO)
    try:
        out = build(cfg)
    except DoesNotFitError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return DOES_NOT_FIT
    finally:
        logger.removeHandler(notes)
        logger.setLevel(level)
    print(f"build folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
