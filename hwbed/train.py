"""``python -m hwbed.train --model SPEC --data NAME ...``: train any network of the study.

Writes ``<out>/model.pt`` and its model card ``<out>/model.json`` after every epoch; running
the same command again resumes a killed run exactly (or reports that it is complete), with
more ``--epochs`` extends it; other settings are refused unless ``--force`` replaces the run.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from hwbed.cli import command
from hwbed.models.checkpoint import CheckpointError
from hwbed.models.spec import SpecError
from hwbed.models.training import TrainConfig, train

HELP = {
    "model": "model spec, e.g. resnet20-xnor (see hwbed.models.spec)",
    "data": "data set: digits (default), synthetic, cifar10, cifar10-samples, fashion-mnist, "
    "imagenet",
    "data_dir": "folder or archive of cifar10/imagenet (default $HWBED_DATA_DIR)",
    "teacher": "teacher checkpoint for -kd specs",
    "init": "start from this checkpoint (-prune-*: the trained float network; w<W>a<A>: "
    "its float version, quantized and calibrated first)",
    "calibration_images": "training images that calibrate a float network quantized to "
    "w<W>a<A> (default 1024)",
    "out": "output folder (default runs/<spec>-<data>-s<seed>)",
    "force": "replace a run in the output folder trained with other settings or more epochs",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hwbed.train", description=__doc__.splitlines()[0]
    )
    defaults = TrainConfig(model="")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.name == "model":
            parser.add_argument(flag, required=True, help=HELP["model"])
        elif isinstance(default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=HELP.get(f.name)
            )
        else:
            kind = {
                "epochs": int,
                "batch_size": int,
                "seed": int,
                "limit": int,
                "pretrain_epochs": int,
                "calibration_images": int,
                "lr": float,
                "weight_decay": float,
                "kd_temperature": float,
                "kd_alpha": float,
            }.get(f.name, str)
            parser.add_argument(
                flag, type=kind, default=default, help=HELP.get(f.name, f"default: {default}")
            )
    return parser


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = TrainConfig(**vars(args))
    try:
        path = train(cfg)
    except (SpecError, CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"checkpoint: {path}\nmodel card: {path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
