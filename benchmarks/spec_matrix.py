"""The spec matrix: every family of the spec grammar lowered and checked, exact or refused.

For each entry of :func:`hwbed.fpga.lowering.spec_matrix.entries` (architecture x variant, as the
grammar accepts them): a seeded random calibrated twin, ``lower()``, and the reference
executor against the twin on extreme and random images (256; 64 for the 3x64x64 ImageNet
ResNets, whose numpy reference run is slow). Prints one row per spec as it goes,
then the table and the counts; writes JSON. Exits 1 if any spec is inexact or crashed.

    python benchmarks/spec_matrix.py [--images 256] [--only REGEX] [--out PATH]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings

import torch
from results import machine, write_results

from hwbed.fpga.lowering.spec_matrix import check, entries
from hwbed.models.spec import parse_spec

BAD = ("inexact", "error")


def row(o) -> str:
    shape = "x".join(map(str, o.shape))
    return f"{o.spec:<34}{shape:<9}{o.status:<9}{o.seconds:>8.1f}  {o.detail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="images per lowered spec")
    parser.add_argument(
        "--imagenet-images", type=int, default=64, help="images per lowered 3x64x64 ResNet"
    )
    parser.add_argument("--only", help="regular expression: check the specs it matches")
    parser.add_argument("--out", default="benchmarks/results/spec_matrix.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Keyword arguments are being passed")
    torch.set_num_threads(1)
    todo = [e for e in entries() if not args.only or re.search(args.only, e.spec)]
    head = f"{'spec':<34}{'shape':<9}{'status':<9}{'seconds':>8}  detail"
    print(head, flush=True)
    start, outcomes = time.perf_counter(), []
    for entry in todo:
        big = parse_spec(entry.spec).family == "imagenet-resnet"
        outcomes.append(check(entry, args.imagenet_images if big else args.images))
        print(row(outcomes[-1]), flush=True)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("exact", "refused", *BAD)}
    print("\n" + head)
    for o in outcomes:
        print(row(o))
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    doc = {
        "machine": machine(
            "one process, one torch thread; seconds include building and calibrating the twin",
            torch_threads=1,
        ),
        "images": {"default": args.images, "imagenet-resnet": args.imagenet_images},
        "seconds": round(time.perf_counter() - start, 1),
        "counts": counts,
        "specs": [o.to_dict() for o in outcomes],
    }
    write_results(args.out, doc, indent=1)
    bad = [o for o in outcomes if o.status in BAD]
    for o in bad:
        print(f"FAIL {o.spec}: {o.status}: {o.detail}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
