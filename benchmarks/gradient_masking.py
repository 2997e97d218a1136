"""Gradient-masking check of a binary network: white-box variants beside black-box attacks.

``python benchmarks/gradient_masking.py [--build build/resnet20-xnor-pynq-z2] [--float CKPT]``

On the build's twin: PGD (L∞) with the straight-through estimators as trained (CE loss), with
the C&W margin loss, with temperature-scaled logits (T = 10), with BPDA (tanh and identity
surrogates of every binary activation), and a transfer attack from the float baseline
(``--float``); every adversarial is scored on the DSP48 simulator after the uint8 boundary.
Beside them, LocalSearch and GenAttack query the simulator directly. A black-box attack that
beats every white-box variant (overall, or per image) is the signature of gradient masking
(Carlini et al. 2019, §4; Athalye et al. 2018) and is flagged. Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from results import write_results

from hwbed.attacks import PGD, Twin, px, score_on
from hwbed.attacks.backends import make_executable
from hwbed.attacks.genattack import GenAttack
from hwbed.attacks.local_search import LocalSearch
from hwbed.models.data.registry import load_dataset


def white_box(twin: Twin, args) -> dict:
    """name -> (twin, PGD) of the white-box variants."""
    pgd = {"steps": args.steps, "restarts": args.restarts}
    return {
        "pgd-ste-ce": (twin, PGD("linf", **pgd)),
        "pgd-ste-margin": (twin, PGD("linf", loss="margin", **pgd)),
        "pgd-ste-T10": (twin.variant(temperature=10.0), PGD("linf", **pgd)),
        "pgd-bpda-tanh": (twin.variant(bpda="tanh"), PGD("linf", **pgd)),
        "pgd-bpda-identity": (twin.variant(bpda="identity"), PGD("linf", **pgd)),
        "pgd-bpda-tanh-margin": (twin.variant(bpda="tanh"), PGD("linf", loss="margin", **pgd)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default="build/resnet20-xnor-pynq-z2")
    parser.add_argument(
        "--float",
        default="runs/resnet20-digits-s0/model.pt",
        help="float baseline checkpoint for the transfer attack ('' to skip)",
    )
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument(
        "--eps", type=float, nargs="+", default=[4, 8, 16], help="L∞ radii in pixel units (k/255)"
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--budget", type=int, default=10000, help="black-box queries per image")
    parser.add_argument("--out", default="benchmarks/results/gradient_masking.json")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    build = Path(args.build)
    twin = Twin.from_checkpoint(build)
    sim = make_executable("sim", build)
    x, y, _ = load_dataset("digits", "test")
    x, y = x[: args.images], y[: args.images]
    eps = [px(k) for k in args.eps]
    rows, survive = [], {}

    def record(name: str, kind: str, result, seconds: float) -> None:
        survive[name] = (result.pred == y[None]) & (result.clean_pred == y)[None]
        for e, k in enumerate(args.eps):
            rows.append(
                {
                    "attack": name,
                    "kind": kind,
                    "eps_px": k,
                    "robust_accuracy_sim": float(result.robust_accuracy[e]),
                    "clean_accuracy_sim": result.clean_accuracy,
                    "mean_queries": float(result.queries[e].mean()),
                    "seconds": round(seconds, 1),
                }
            )
        print(
            f"{name:24s} {kind:10s} "
            + " ".join(
                f"{k:g}/255: {a:.3f}" for k, a in zip(args.eps, result.robust_accuracy, strict=True)
            ),
            flush=True,
        )

    for name, (model, attack) in white_box(twin, args).items():
        t0 = time.perf_counter()
        record(name, "white-box", score_on(attack(model, x, y, eps), sim), time.perf_counter() - t0)
    if args.float:
        t0 = time.perf_counter()
        base = Twin.from_checkpoint(args.float)
        crafted = PGD("linf", steps=args.steps, restarts=args.restarts)(base, x, y, eps)
        record("pgd-transfer-float", "transfer", score_on(crafted, sim), time.perf_counter() - t0)
    for name, attack in (
        ("localsearch", LocalSearch(budget=args.budget)),
        ("genattack", GenAttack(budget=args.budget)),
    ):
        t0 = time.perf_counter()
        record(name, "black-box", attack(sim, x, y, eps), time.perf_counter() - t0)

    white = [n for n in survive if n.startswith("pgd-")]
    best_white = np.logical_and.reduce([survive[n] for n in white])  # survives every variant
    flags = []
    for name in ("localsearch", "genattack"):
        for e, k in enumerate(args.eps):
            wb_best = min(
                r["robust_accuracy_sim"] for r in rows if r["attack"] in white and r["eps_px"] == k
            )
            bb = next(
                r["robust_accuracy_sim"] for r in rows if r["attack"] == name and r["eps_px"] == k
            )
            only_bb = int(np.sum(best_white[e] & ~survive[name][e]))
            flags.append(
                {
                    "black_box": name,
                    "eps_px": k,
                    "black_box_accuracy": bb,
                    "best_white_box_accuracy": wb_best,
                    "beats_every_white_box": bool(bb < wb_best),
                    "images_only_black_box_breaks": only_bb,
                }
            )
    print("\ngradient-masking check (robust accuracy on the simulator; lower = stronger attack)")
    print(
        f"{'black-box':12s} {'eps':>6s} {'black-box':>10s} {'best white':>11s} "
        f"{'beats all':>10s} {'images only it breaks':>22s}"
    )
    for f in flags:
        print(
            f"{f['black_box']:12s} {f['eps_px']:>4g}px {f['black_box_accuracy']:>10.3f} "
            f"{f['best_white_box_accuracy']:>11.3f} {str(f['beats_every_white_box']):>10s} "
            f"{f['images_only_black_box_breaks']:>22d}"
        )
    doc = {
        "build": str(build),
        "images": len(y),
        "norm": "linf",
        "eps_px": args.eps,
        "pgd": {"steps": args.steps, "restarts": args.restarts, "rel_stepsize": 0.25},
        "budget": args.budget,
        "rows": rows,
        "masking_flags": flags,
    }
    write_results(args.out, doc)


if __name__ == "__main__":
    main()
