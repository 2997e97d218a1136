"""``python -m hwbed.cost SPEC [SPEC ...] [--data NAME] [--json]``: memory and NCC per layer.

Costs are those of a freshly initialised network (pruned specs pruned at their rate) or,
with ``--checkpoint``, of a trained one. Without ``--data`` the input shape is the study's:
CIFAR-10 for the CIFAR ResNets and CNV, ImageNet for ResNet18/50, 28x28 gray for the MLPs.
``--data`` needs only the data set's declared shape, never its files.

Two memory figures: ``memory_mb``, the study's (stored weights and their scales, BN and
activation scales not counted: :mod:`hwbed.models.cost`), and ``device_memory_mb``, what the
integer dataflow graph stores (weights at their widths, thresholds, float32 constants:
:mod:`hwbed.fpga.finn.memory`). The second lowers the network, calibrated on random inputs,
as the build does; a float network has none (``-``) and a network the lowering refuses says
why. Lowering computes and checks every threshold table: measured on 2 busy cores, under a
second for the BNN-PYNQ networks, 5-13 s for a CIFAR ResNet, 15 s (resnet18-xnor) to 2.5 min
(resnet50-abc3x3) for an ImageNet ResNet, calibration at 224x224 included (the input size
hardly matters, the tables do). So
``--device-memory auto`` (the default) lowers every network but the ImageNet ResNets;
``yes`` lowers all, ``no`` none.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from hwbed.cli import InputError, add_debug, command, quiet_known_warnings
from hwbed.fpga.finn.memory import BITS_PER_MB, DeviceMemory
from hwbed.models.cost import ModelCost, model_cost
from hwbed.models.data import available_datasets, dataset_shape
from hwbed.models.spec import ModelSpec, parse_spec
from hwbed.models.zoo import build_model, input_size

DEFAULT_DATA = {"cifar-resnet": "cifar10", "imagenet-resnet": "imagenet", "cnv": "cifar10"}
CALIBRATION_IMAGES = 4
"""Random images of the train-mode passes that set a fresh network's quantizer statistics."""


def default_data(spec) -> str:
    """The data set whose shape the study's cost table assumes for ``spec``."""
    key = "cnv" if spec.arch == "cnv" else spec.family
    return DEFAULT_DATA.get(key, "fashion-mnist")


@dataclass
class DeviceCost:
    """What one network's integer graph stores, or why there is none (``note``)."""

    memory: DeviceMemory | None
    note: str | None = None

    @property
    def memory_mb(self) -> float | None:
        return None if self.memory is None else self.memory.mb


def network(text: str, data: str | None = None, checkpoint: str | None = None):
    """(model, spec, input shape, fresh) for a spec on a data set's shape, or a checkpoint."""
    quiet_known_warnings()
    if checkpoint is not None:
        from hwbed.models.checkpoint import load_checkpoint

        model, meta = load_checkpoint(checkpoint)
        return model, meta.spec, tuple(meta.input_shape), False
    spec = parse_spec(text)
    shape = dataset_shape(data or default_data(spec), size=input_size(spec))
    return build_model(spec, *shape.chw, shape.num_classes), spec, shape.chw, True


def cost_of(text: str, data: str | None = None, checkpoint: str | None = None) -> ModelCost:
    """Cost of a spec on a data set's input shape (or of a trained checkpoint)."""
    model, spec, shape, _ = network(text, data, checkpoint)
    return model_cost(model, spec, shape)


def calibrate(model, shape: tuple[int, int, int], seed: int = 0) -> None:
    """End a fresh network's quantizer statistics phase on random images (then eval mode).

    One train-mode pass, every runtime-statistics scale marked as collected, a second pass
    (the learned scales take over from the statistics), as ``tests/conftest.py`` does.
    """
    import torch

    from hwbed.models.quantize import end_stats_phase

    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(CALIBRATION_IMAGES, *shape, generator=generator)
    end_stats_phase(model, x)
    model.eval()


def device_cost(
    model, spec: ModelSpec, shape: tuple[int, int, int], fresh: bool, mode: str = "auto"
) -> DeviceCost:
    """What the integer graph of ``model`` stores (lowered as the build lowers it)."""
    if not spec.quantized:
        source = f"--model {spec.name}" if fresh else "--checkpoint CKPT"
        return DeviceCost(
            None,
            note=f"{spec.name} is full precision, no integer graph; python -m hwbed.build "
            f"{source} --quantize w8a8 builds its deployed version",
        )
    if mode == "no":
        return DeviceCost(None, note="not computed (--device-memory no)")
    if mode == "auto" and spec.family == "imagenet-resnet":
        return DeviceCost(
            None,
            note="not computed by default: calibrating and lowering an ImageNet ResNet takes "
            "15 s to minutes; add --device-memory yes",
        )
    from hwbed.fpga.finn.memory import device_memory
    from hwbed.fpga.lowering.lower import lower
    from hwbed.ir.types import GraphError

    if fresh:
        calibrate(model, shape)
    try:
        memory = device_memory(lower(model, spec, shape))
    except GraphError as err:
        return DeviceCost(None, note=f"not lowered: {_one_line(err)}")
    return DeviceCost(memory)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def format_table(cost: ModelCost, device: DeviceCost | None = None) -> str:
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
    if cost.folded_mb:
        lines.append(
            f"memory counts stored weights and their scales; not counted: BN and activation "
            f"scales, {cost.folded_mb:.4f} MB at 32 bits (they fold into thresholds or biases)"
        )
    if device is not None:
        lines.append(f"device memory (integer graph): {_device_text(device)}")
    return "\n".join(lines)


def _device_text(device: DeviceCost) -> str:
    memory = device.memory
    if memory is None:
        return f"- ({device.note})"
    parts = ", ".join(f"{k} {v:.4f}" for k, v in memory.kind_mb().items())
    text = f"{memory.mb:.4f} MB ({parts})"
    if memory.abc_bases_bits:
        text += (
            f"; the ABC MVAUs hold {memory.abc_folded_bits / BITS_PER_MB:.4f} MB of it as folded "
            f"integer weights, {memory.abc_bases_bits / BITS_PER_MB:.4f} MB as binary bases and "
            "coefficients (the simulator's form)"
        )
    return text


def to_dict(cost: ModelCost, device: DeviceCost | None) -> dict:
    """One model's JSON object: the cost's fields, ``device_memory_mb`` (null if none) and
    ``device_memory`` (per-kind totals and one row per stored parameter, or the note)."""
    row = cost.to_dict()
    if device is not None:
        row["device_memory_mb"] = device.memory_mb
        detail = device.memory.to_dict() if device.memory is not None else {}
        detail.pop("device_memory_mb", None)
        row["device_memory"] = {**detail, "note": device.note}
    return row


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
    parser.add_argument(
        "--device-memory",
        choices=("auto", "yes", "no"),
        default="auto",
        help="lower each quantized network to count what the device stores "
        "(auto: all but the ImageNet ResNets, which take 15 s to minutes each)",
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
    rows = []
    for text in args.specs:
        model, spec, shape, fresh = network(text, args.data, args.checkpoint)
        cost = model_cost(model, spec, shape)
        rows.append((cost, device_cost(model, spec, shape, fresh, args.device_memory)))
    if args.json:
        print(json.dumps([to_dict(c, d) for c, d in rows], indent=2))
    else:
        print("\n\n".join(format_table(c, d) for c, d in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
