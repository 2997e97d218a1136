"""``python -m hwbed.cost SPEC [SPEC ...] [--data NAME] [--json]``: memory and NCC per layer.

Costs are those of a freshly initialised network (pruned specs pruned at their rate) or,
with ``--checkpoint``, of a trained one. Without ``--data`` the input shape is the study's:
CIFAR-10 for the CIFAR ResNets and CNV, ImageNet for ResNet18/50, 28x28 gray for the MLPs.
"""

from __future__ import annotations

import argparse
import json
import sys

from hwbed.cli import InputError, add_debug, command, quiet_known_warnings
from hwbed.models.cost import ModelCost, model_cost
from hwbed.models.data import available_datasets, dataset_info
from hwbed.models.spec import parse_spec
from hwbed.models.zoo import build_model, input_size

IMAGENET_SHAPE = ((3, 224, 224), 1000)
"""ILSVRC-2012 input and classes, used for costs when no ImageNet folder is configured."""
DEFAULT_DATA = {"cifar-resnet": "cifar10", "imagenet-resnet": "imagenet", "cnv": "cifar10"}


def default_data(spec) -> str:
    """The data set whose shape the study's cost table assumes for ``spec``."""
    key = "cnv" if spec.arch == "cnv" else spec.family
    return DEFAULT_DATA.get(key, "fashion-mnist")


def cost_of(text: str, data: str | None = None, checkpoint: str | None = None) -> ModelCost:
    """Cost of a spec on a data set's input shape (or of a trained checkpoint)."""
    quiet_known_warnings()
    if checkpoint is not None:
        from hwbed.models.checkpoint import load_checkpoint

        model, meta = load_checkpoint(checkpoint)
        return model_cost(model, meta.spec, tuple(meta.input_shape))
    spec = parse_spec(text)
    name = data or default_data(spec)
    try:
        info = dataset_info(name, size=input_size(spec))
        shape, classes = (info.channels, info.height, info.width), info.num_classes
    except FileNotFoundError:
        if data is not None or name != "imagenet":
            raise
        shape, classes = IMAGENET_SHAPE  # costs need only the shape, not the images
    model = build_model(spec, *shape, classes)
    return model_cost(model, spec, shape)


def format_table(cost: ModelCost) -> str:
    """A readable per-layer table with totals."""
    head = (
        f"{'layer':<28} {'kind':<7} {'precision':<9} {'params':>10} {'memory MB':>10} "
        f"{'MACs':>12} {'NCC 1e6':>9}"
    )
    lines = [f"== {cost.model}", head, "-" * len(head)]
    for r in cost.layers:
        lines.append(
            f"{r.name:<28} {r.kind:<7} {r.precision:<9} {r.params:>10,} {r.memory_mb:>10.4f} "
            f"{r.macs:>12,} {r.ncc_m:>9.4f}"
        )
    lines.append("-" * len(head))
    lines.append(
        f"{'total':<46} {cost.params:>10,} {cost.memory_mb:>10.4f} {cost.macs:>12,} "
        f"{cost.ncc_m:>9.4f}"
    )
    return "\n".join(lines)


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hwbed.cost", description=__doc__.splitlines()[0]
    )
    parser.add_argument("specs", nargs="+", metavar="SPEC", help="model specs, e.g. resnet20-xnor")
    parser.add_argument("--data", help="data set whose input shape to use (default: the study's)")
    parser.add_argument(
        "--checkpoint", help="cost of this trained checkpoint instead of a fresh net"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of tables")
    add_debug(parser)
    args = parser.parse_args(argv)
    if args.data is not None and args.data not in available_datasets():
        known = ", ".join(available_datasets())
        raise InputError(f"unknown data set; known: {known}", f"--data {args.data}")
    if args.checkpoint is None:
        for spec in args.specs:  # every spec checked before the first network is built
            parse_spec(spec)
    costs = [cost_of(s, args.data, args.checkpoint) for s in args.specs]
    if args.json:
        print(json.dumps([c.to_dict() for c in costs], indent=2))
    else:
        print("\n\n".join(format_table(c) for c in costs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
