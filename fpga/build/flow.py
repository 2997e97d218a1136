"""The build flow: ordered named steps with presets as data (FINN's build_dataflow shape).

model -> export -> lower -> fold -> estimate -> finn_folder -> deploy -> verify [-> run_finn]

Every step reads its inputs from the output folder and writes its artifact there, so a build
resumes with ``start_step`` and stops early with ``stop_step``. Inputs (spec, folding file,
optional extras) are checked before the first step. A design that does not fit the board
still gets its graph, estimates, deploy package and verification, but no FINN folder; the
build then raises :class:`DoesNotFitError`. Progress (each step, the folding, the summary)
goes to the ``hwbed.progress`` logger, which the CLIs print on stdout.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwbed.fpga.finn.boards import Board, get_board

DEFAULT_MODEL = "resnet20-xnor"


class BuildError(RuntimeError):
    """A build that cannot go on; the message says which step and why."""


class DoesNotFitError(BuildError):
    """The design's estimate exceeds the board; ``shortfall`` maps resource -> amount over.

    Raised after every step that makes sense without a fit (estimates, deploy, verify).
    """

    def __init__(self, msg: str, shortfall: dict[str, float]):
        super().__init__(msg)
        self.shortfall = shortfall


EXPORT_MODULES = ("onnx", "onnxoptimizer", "qonnx", "onnxruntime")
"""What the export and verify steps import (the ``export`` extra)."""
NEEDS_EXPORT_EXTRA = ("export", "verify")


@dataclass
class BuildConfig:
    """One build; written to ``build_config.json`` in the output folder."""

    target: str = "pynq-z2"
    """Board name (see hwbed.fpga.finn.boards)."""
    model: str | None = None
    """Model spec; default resnet20-xnor (trained on digits and cached)."""
    checkpoint: str | None = None
    """Build this trained checkpoint instead of training."""
    data: str | None = None
    """Data set for training and verification (default digits; cnv: synthetic 3x32x32)."""
    weights: str = "trained"
    """trained, or random (a freshly initialised, calibrated network: structure and estimates)."""
    quantize: str | None = None
    """``w<W>a<A>``: build the deployed version of a float network (``checkpoint``, or a float
    ``model`` trained first): post-training quantization calibrated on its training split."""
    finetune_epochs: int = 0
    """Epochs of quantization-aware fine-tuning after ``quantize``'s calibration."""
    calibration_images: int = 1024
    """Training images that calibrate ``quantize``'s activation scales."""
    folding: str | None = None
    """FINN folding config JSON to apply unchanged."""
    target_fps: float | None = None
    """Fold to reach this frame rate (FINN's SetFolding); else the fastest folding that fits."""
    out: str | None = None
    """Output folder; default build/<model>-<target>."""
    finn: bool = False
    """Run FINN's build_dataflow_cfg on the emitted folder (needs FINN importable)."""
    preset: str = "estimate_only"
    start_step: str | None = None
    stop_step: str | None = None
    epochs: int = 30
    force: bool = False
    """Replace the cached training run when it was trained with other settings."""
    verify_n: int = 64
    seed: int = 0
    progress: bool = True

    def spec_name(self) -> str:
        """The spec of the network built (after ``quantize``)."""
        if self.quantize:
            from hwbed.models.quantize import deployed_spec

            return deployed_spec(self.source_spec_name(), self.quantize).name
        return self.source_spec_name()

    def source_spec_name(self) -> str:
        """The spec of the network given (``model``, or the checkpoint's), before ``quantize``."""
        from hwbed.models.spec import parse_spec

        if self.checkpoint and not self.model:
            from hwbed.models.checkpoint import read_checkpoint

            return read_checkpoint(self.checkpoint)["spec"]
        return parse_spec(self.model or DEFAULT_MODEL).name

    def data_name(self) -> str:
        if self.data:
            return self.data
        if self.quantize and self.checkpoint:  # calibrated and tested on its own data set
            from hwbed.models.checkpoint import read_checkpoint

            return read_checkpoint(self.checkpoint)["data"]
        return "synthetic" if self.spec_name().startswith("cnv") else "digits"

    def output_dir(self) -> Path:
        return Path(self.out or f"build/{self.spec_name()}-{self.target}")


@dataclass(frozen=True)
class Step:
    """One build step: what it runs, and the line the build reports before running it."""

    run: Callable[[BuildConfig, Path, Board], None]
    description: str


progress = logging.getLogger("hwbed.progress")
"""What the build reports as it goes (steps, folding, summary); the CLIs print it on stdout."""
log = logging.getLogger(__name__)


# -- steps -----------------------------------------------------------------------------------
def step_model(cfg: BuildConfig, out: Path, board: Board) -> None:
    from hwbed.models.checkpoint import CheckpointMeta, card_path, load_checkpoint, save_checkpoint

    dst = out / "model.pt"
    if cfg.quantize:
        _quantized_model(cfg, out, dst)
        return
    if cfg.checkpoint:
        load_checkpoint(cfg.checkpoint)  # validates before copying
        shutil.copyfile(cfg.checkpoint, dst)
        if card_path(cfg.checkpoint).is_file():
            shutil.copyfile(card_path(cfg.checkpoint), card_path(dst))
        return
    spec = cfg.spec_name()
    if cfg.weights == "random":
        model, shape, classes = _calibrated_random(cfg)
        from hwbed.models.spec import parse_spec

        meta = CheckpointMeta(
            parse_spec(spec),
            cfg.data_name(),
            shape,
            classes,
            complete=True,
            card={"weights": "random", "seed": cfg.seed},
        )
        save_checkpoint(dst, model, meta)
        return
    if cfg.weights != "trained":
        raise BuildError(f"--weights must be trained or random, got {cfg.weights!r}")
    ckpt = _train(cfg, spec)
    shutil.copyfile(ckpt, dst)
    shutil.copyfile(card_path(ckpt), card_path(dst))


def _train(cfg: BuildConfig, spec: str) -> Path:
    """Train ``spec`` on the build's data set, cached in runs/ (resumed or found complete)."""
    from hwbed.models.training import TrainConfig, train

    tcfg = TrainConfig(
        model=spec,
        data=cfg.data_name(),
        epochs=cfg.epochs,
        seed=cfg.seed,
        progress=cfg.progress,
        force=cfg.force,
    )
    progress.info(f"training {spec} on {cfg.data_name()} (cached in {tcfg.output_dir()})")
    return train(tcfg)


def _quantized_model(cfg: BuildConfig, out: Path, dst: Path) -> None:
    """The deployed version of the float network: PTQ (+ QAT fine-tune) into out/quantize/.

    That sub-folder is a training run: a killed fine-tune resumes, a rebuild with the same
    settings finds it complete, other settings replace it.
    """
    from hwbed.models.checkpoint import card_path
    from hwbed.models.quantize_checkpoint import quantize_checkpoint

    source = cfg.checkpoint or _train(cfg, cfg.source_spec_name())
    progress.info(f"quantizing {source} to {cfg.quantize} (calibration on its training split)")
    ckpt = quantize_checkpoint(
        source,
        cfg.quantize,
        out / "quantize",
        finetune_epochs=cfg.finetune_epochs,
        calibration_images=cfg.calibration_images,
        seed=cfg.seed,
        progress=cfg.progress,
        force=True,
    )
    shutil.copyfile(ckpt, dst)
    shutil.copyfile(card_path(ckpt), card_path(dst))
    card = json.loads(card_path(dst).read_text())
    origin = card["quantized_from"]
    progress.info(
        f"deployed {card['spec']}: test accuracy {card['test_accuracy']:.4f} "
        f"(float {origin['spec']}: {origin['test_accuracy']:.4f}), "
        f"{origin['calibration']['images']} calibration images, "
        f"{origin['finetune_epochs']} fine-tune epochs"
    )


def _calibrated_random(cfg: BuildConfig):
    """A fresh network after a few train-mode passes over data (sets quantizer statistics)."""
    import torch

    from hwbed.models.data import load_dataset, to_float
    from hwbed.models.zoo import build_model, input_size

    spec = cfg.spec_name()
    x, _, info = load_dataset(
        cfg.data_name(), "train", size=input_size(spec), limit=256, seed=cfg.seed
    )
    torch.manual_seed(cfg.seed)
    model = build_model(spec, info.channels, info.height, info.width, info.num_classes)
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 64):
            model(to_float(x[i : i + 64]))
    model.eval()
    return model, (info.channels, info.height, info.width), info.num_classes


def step_export(cfg: BuildConfig, out: Path, board: Board) -> None:
    from hwbed.fpga.export.qonnx_export import export_qonnx
    from hwbed.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(out / "model.pt")
    export_qonnx(model, meta.input_shape, out / "model.qonnx.onnx")


def step_lower(cfg: BuildConfig, out: Path, board: Board) -> None:
    from hwbed.fpga.lowering.lower import lower_checkpoint

    graph = lower_checkpoint(out / "model.pt")
    graph.save(out / "graph")  # stores the checkpoint as "model.pt": the folder can move


def step_fold(cfg: BuildConfig, out: Path, board: Board) -> None:
    from hwbed.fpga.finn.folding import (
        BudgetExceededError,
        apply_folding_config,
        extract_folding_config,
        fold_for_fps,
        fold_to_fit,
        save_folding_config,
    )
    from hwbed.fpga.finn.nodes import finn_nodes
    from hwbed.ir.graph import Graph

    nodes = finn_nodes(Graph.load(out / "graph"))
    if cfg.folding:
        nodes = apply_folding_config(nodes, cfg.folding)
        how = f"applied {cfg.folding}"
    elif cfg.target_fps:
        nodes = fold_for_fps(nodes, cfg.target_fps, board.clk_ns, board=board)
        how = f"target {cfg.target_fps:g} fps at {board.clk_mhz:g} MHz"
    else:
        try:
            nodes = fold_to_fit(nodes, board)
            how = f"fastest folding that fits {board.name}"
        except BudgetExceededError as err:  # build what can be built; estimate says by how much
            nodes = err.folding
            how = f"cheapest folding (nothing fits {board.name})"
    save_folding_config(extract_folding_config(nodes), out / "folding_config.json")
    (out / "hw_nodes.json").write_text(json.dumps({"folding": how, "nodes": nodes}, indent=1))
    progress.info(f"folding: {how}")


def step_estimate(cfg: BuildConfig, out: Path, board: Board) -> None:
    from hwbed.fpga.finn.estimates import dma_bound_fps, write_estimate_reports
    from hwbed.fpga.finn.memory import device_memory_mb
    from hwbed.ir.graph import Graph
    from hwbed.models.checkpoint import load_checkpoint
    from hwbed.models.cost import model_cost

    hw_nodes = json.loads((out / "hw_nodes.json").read_text())
    nodes = hw_nodes["nodes"]
    write_estimate_reports(nodes, out / "report", board.part, board.clk_ns)
    perf = json.loads((out / "report" / "estimate_network_performance.json").read_text())
    total = json.loads((out / "report" / "estimate_layer_resources.json").read_text())["total"]
    graph = Graph.load(out / "graph")
    model, meta = load_checkpoint(out / "model.pt")
    cost = model_cost(model, meta.spec, meta.input_shape)
    in_bits = int(np.prod(graph.tensors[graph.input].shape)) * 8
    label = graph.tensors[graph.nodes[-1].outputs[0]]
    out_bits = max(8, label.dtype.bits)
    dma_fps = dma_bound_fps(board.dma_width_bits, in_bits, out_bits, board.clk_ns)
    budget = board.budget()
    used = {k: float(total.get(k, 0.0)) for k in budget}
    shortfall = {k: used[k] - budget[k] for k in budget if used[k] > budget[k]}
    fits = not shortfall
    kept = ("accuracy_reported", "best_test_accuracy", "best_epoch")
    training = {k: meta.card[k] for k in kept if k in meta.card}
    summary: dict[str, Any] = {
        "model": meta.spec.name,
        "weights": meta.card.get("weights", "trained"),
        "test_accuracy": meta.card.get("test_accuracy"),
        **training,
        **_float_vs_deployed(meta.card),
        **_zero_weights(graph, meta.spec),
        "data": meta.data,
        "target": board.name,
        "board": board.finn_board,
        "part": board.part,
        "clock_mhz": board.clk_mhz,
        "fps_compute_bound": perf["estimated_throughput_fps"],
        "fps_dma_bound": dma_fps,
        "fps": min(perf["estimated_throughput_fps"], dma_fps),
        "latency_ms": perf["estimated_latency_ns"] / 1e6,
        "bottleneck": perf["max_cycles_node_name"],
        "bottleneck_cycles": perf["max_cycles"],
        "resources": {
            k: {
                "used": used[k],
                "budget": budget[k],
                "percent": 100.0 * used[k] / budget[k] if budget[k] else None,
            }
            for k in budget
        },
        "fits": fits,
        "shortfall": shortfall,
        "finn_folder": "finn" if fits else f"not written: the design does not fit {board.name}",
        "ncc_m": cost.ncc_m,
        "memory_mb": cost.memory_mb,
        "device_memory_mb": device_memory_mb(graph),
        "dsp_slice_model": _dsp_model(board),
        "dsp_slice_ops": _dsp_ops(graph, board, nodes),
        "folding": hw_nodes["folding"],
    }
    if board.dsp_type == "DSP58":
        note = DSP58_NOTE.format(part=board.part)
        log.warning("%s", note)
        summary.setdefault("notes", []).append(note)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    progress.info(format_summary(summary))


def _float_vs_deployed(card: dict[str, Any]) -> dict[str, Any]:
    """Summary fields of a network quantized from a float one (``--quantize``), else none.

    ``test_accuracy`` is the deployed twin's (which the verify step proves bit-exact with the
    integer graph, so it is the device's); ``float_test_accuracy`` the float network's on the
    same test split.
    """
    origin = card.get("quantized_from")
    if not isinstance(origin, dict):
        return {}
    deployed, floating = card.get("test_accuracy"), origin.get("test_accuracy")
    delta = None if None in (deployed, floating) else deployed - floating
    return {
        "float_test_accuracy": floating,
        "accuracy_change": delta,
        "quantized_from": {
            "spec": origin.get("spec"),
            "checkpoint": origin.get("checkpoint"),
            "sha256": origin.get("sha256"),
            "calibration_images": (origin.get("calibration") or {}).get("images"),
            "finetune_epochs": origin.get("finetune_epochs"),
        },
    }


def _zero_weights(graph, spec) -> dict[str, Any]:
    """The fraction of zero MVAU weights; for kernel/weight pruning, what that buys on FINN."""
    mvaus = [n.params["weights"] for n in graph.nodes if n.op == "MVAU"]
    total = sum(int(w.size) for w in mvaus)
    zeros = sum(int((w == 0).sum()) for w in mvaus)
    fields: dict[str, Any] = {"mvau_zero_weight_fraction": zeros / total if total else 0.0}
    if spec.prune in ("kernel", "weight"):
        fields["notes"] = [
            f"{spec.prune}-pruned: {100 * zeros / max(total, 1):.1f} % of the MVAU weights are "
            "zero, and FINN gains nothing from them: its MVAUs store and multiply every weight "
            "(no sparsity), so folding, cycles, resources and fps include them; the NCC column "
            "counts pruned MACs as 0 (the study's convention), the hardware does not"
        ]
    elif spec.prune in ("filter", "channel"):
        fields["notes"] = [
            f"{spec.prune}-pruned: the removed structures are gone from the device too (smaller "
            "MVAUs), so folding, cycles and resources shrink with the NCC"
        ]
    return fields


def _overrun(summary: dict[str, Any]) -> str:
    """``BRAM_18K 422 > 280 (+142), ...`` for the resources a summary exceeds."""
    res = summary["resources"]
    return ", ".join(
        f"{k} {r['used']:.0f} > {r['budget']} (+{r['used'] - r['budget']:.0f})"
        for k, r in res.items()
        if r["used"] > r["budget"]
    )


def _does_not_fit(summary: dict[str, Any], out: Path) -> DoesNotFitError:
    folding = summary["folding"]
    if folding.startswith("cheapest folding"):
        how = "even with the cheapest folding of every layer"
    elif folding.startswith("applied "):
        how = f"with the folding in {folding.removeprefix('applied ')}"
    else:
        how = f"with the folding for the {folding}"
    return DoesNotFitError(
        f"{summary['model']} does not fit {summary['target']}: {_overrun(summary)}, {how}; "
        f"no FINN folder; estimates, verification and the simulator's deploy package are in {out}",
        summary["shortfall"],
    )


DSP58_NOTE = (
    "{part} has DSP58 slices, which the simulator does not model: dsp_slice_ops maps the "
    "graph onto DSP48E2 slices instead (dsp_slice_model); the resource estimates are FINN's "
    "for this part"
)
"""Summary note (and build warning) of a Versal part: its slice ops are counted as DSP48E2."""


def _dsp_model(board: Board) -> str:
    """The slice the simulator's mapping counts on: the part's own, DSP48E2 for a DSP58."""
    return "DSP48E1" if board.dsp_type == "DSP48E1" else "DSP48E2"


def _dsp_ops(graph, board: Board, nodes: list[dict]) -> dict:
    """DSP48 slice operations per frame under this folding, from the simulator's mapping."""
    from hwbed.sim.dsp48 import Family
    from hwbed.sim.mapping import dsp_report, report_totals

    family = Family.E1 if _dsp_model(board) == "DSP48E1" else Family.E2
    folding = {n["name"]: {k: n[k] for k in ("PE", "SIMD") if k in n} for n in nodes}
    return report_totals(dsp_report(graph, family, folding))


def format_summary(s: dict[str, Any]) -> str:
    """The readable summary printed at the end of a build."""
    lines = [
        f"== {s['model']} on {s['target']} ({s['part']}, {s['clock_mhz']:g} MHz), "
        f"weights {s['weights']}",
        f"   folding: {s['folding']}",
        f"   {'resource':<10}{'used':>10}{'budget':>10}{'use %':>8}",
    ]
    for k, r in s["resources"].items():
        pct = f"{r['percent']:.1f}" if r["percent"] is not None else "-"
        lines.append(f"   {k:<10}{r['used']:>10.0f}{r['budget']:>10}{pct:>8}")
    lines += [
        "   fits: yes" if s["fits"] else f"   fits: NO, over by {_overrun(s)}",
        f"   fps: {s['fps']:.1f} (compute-bound {s['fps_compute_bound']:.1f}, "
        f"DMA-bound {s['fps_dma_bound']:.1f}); latency {s['latency_ms']:.3f} ms",
        f"   bottleneck: {s['bottleneck']} ({s['bottleneck_cycles']} cycles/frame)",
        f"   NCC {s['ncc_m']:.4f} x 1e6, memory {s['memory_mb']:.4f} MB",
        f"   device memory (what the integer graph stores) {s['device_memory_mb']:.4f} MB",
    ]
    lines += _accuracy_lines(s)
    o = s["dsp_slice_ops"]["ops"]
    lines.append(
        f"   DSP48 slice ops/frame (simulator mapping): {o['total']:,} "
        f"(MAC {o['mac']:,}, packed INT8 {o['packed_int8']:,}, XNOR {o['logic']:,}, "
        f"SIMD add {o['add']:,})"
    )
    return "\n".join(lines)


def _accuracy_lines(s: dict[str, Any]) -> list[str]:
    """format_summary's accuracy line (float vs deployed after --quantize) and notes."""
    lines = []
    acc = s.get("test_accuracy")
    if isinstance(acc, (int, float)) and "float_test_accuracy" in s:
        q = s["quantized_from"]
        fl = s["float_test_accuracy"]
        lines.append(
            f"   test accuracy: deployed {acc:.4f} vs float {fl:.4f} "
            f"({100 * s['accuracy_change']:+.2f} points; {q['spec']} quantized with "
            f"{q['calibration_images']} calibration images, {q['finetune_epochs']} fine-tune "
            "epochs)"
        )
    elif isinstance(acc, (int, float)):
        lines.append(f"   test accuracy: {acc:.4f}")
    lines += [f"   note: {n}" for n in s.get("notes", [])]
    return lines


def step_finn_folder(cfg: BuildConfig, out: Path, board: Board) -> None:
    from hwbed.fpga.finn.folder import write_finn_folder

    if not _fits(out):
        if (out / "finn").is_dir():
            shutil.rmtree(out / "finn")  # an earlier folding's folder no longer applies
        progress.info(f"finn_folder: skipped, the design does not fit {board.name}")
        return
    write_finn_folder(out, board)


def _fits(out: Path) -> bool:
    """The estimate step's verdict (True before there is one)."""
    summary = out / "summary.json"
    return not summary.is_file() or json.loads(summary.read_text())["fits"]


def step_deploy(cfg: BuildConfig, out: Path, board: Board) -> None:
    from hwbed.fpga.deploy.package import write_deploy_package

    write_deploy_package(out, board)


def step_verify(cfg: BuildConfig, out: Path, board: Board) -> None:
    from hwbed.fpga.build.verify import input_pixels, verify
    from hwbed.ir.graph import Graph

    graph = Graph.load(out / "graph")
    pixels, source = input_pixels(graph, cfg.verify_n, cfg.data_name())
    report = verify(graph, pixels)
    text = json.dumps(report.to_dict(source), indent=2, default=_json_scalar)
    (out / "verify.json").write_text(text + "\n")
    progress.info(f"verify on {len(pixels)} images ({source}):\n{report.table()}")
    if report.status != 0:
        raise BuildError("verification failed: a path disagrees with the reference executor")


def _json_scalar(value: Any) -> Any:
    """numpy scalars (np.bool_, np.float64, ...) as Python ones for json.dumps."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def step_run_finn(cfg: BuildConfig, out: Path, board: Board) -> None:
    from hwbed.fpga.finn.folder import run_finn

    if not _fits(out):
        progress.info(f"run_finn: skipped, the design does not fit {board.name} (no FINN folder)")
        return
    run_finn(out)


STEPS: dict[str, Step] = {
    "model": Step(
        step_model,
        "Train, load or initialise the network; write model.pt (+ model card model.json).",
    ),
    "export": Step(step_export, "QONNX export of the twin (what FINN consumes): model.qonnx.onnx."),
    "lower": Step(step_lower, "Integer dataflow graph: graph.json + graph.npz."),
    "fold": Step(
        step_fold, "Folding: a given FINN config, a target fps, or the fastest that fits the board."
    ),
    "estimate": Step(
        step_estimate, "FINN's estimate reports (report/*.json) and hwbed's summary.json."
    ),
    "finn_folder": Step(
        step_finn_folder,
        "finn/: QONNX model, folding config, DataflowBuildConfig JSON, build.py, README.",
    ),
    "deploy": Step(
        step_deploy,
        "deploy/: the graph and a query-server launcher (simulator here, FINN driver on board).",
    ),
    "verify": Step(
        step_verify,
        "Fast path, slice path, qonnx rendering and twin against the reference executor.",
    ),
    "run_finn": Step(
        step_run_finn,
        "Run FINN's build_dataflow_cfg on finn/ and compare its estimates with hwbed's.",
    ),
}

ESTIMATE_ONLY = ("model", "export", "lower", "fold", "estimate", "finn_folder", "deploy", "verify")
"""Everything that runs without Vivado/Vitis."""

PRESETS: dict[str, tuple[str, ...]] = {
    "estimate_only": ESTIMATE_ONLY,
    "finn": (*ESTIMATE_ONLY, "run_finn"),
}


def _portable(cfg: BuildConfig, out: Path) -> dict:
    """The config as ``build_config.json`` records it: paths inside ``out`` relative to it."""
    from hwbed.ir.graph import portable_path

    record = asdict(cfg)
    for key in ("out", "checkpoint", "folding"):
        if record[key]:
            record[key] = portable_path(record[key], out)
    return record


def build(cfg: BuildConfig) -> Path:
    """Run the preset's steps between start_step and stop_step; return the output folder."""
    try:
        board = get_board(cfg.target)
    except ValueError as err:
        raise BuildError(str(err)) from err
    preset = "finn" if cfg.finn else cfg.preset
    if preset not in PRESETS:
        raise BuildError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    steps = list(PRESETS[preset])
    for key in ("start_step", "stop_step"):
        name = getattr(cfg, key)
        if name is not None and name not in steps:
            raise BuildError(
                f"--{key.replace('_', '-')} {name!r} is not a step of {preset}: {', '.join(steps)}"
            )
    first = steps.index(cfg.start_step) if cfg.start_step else 0
    last = steps.index(cfg.stop_step) if cfg.stop_step else len(steps) - 1
    check_inputs(cfg, steps[first : last + 1])
    out = cfg.output_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "build_config.json").write_text(json.dumps(_portable(cfg, out), indent=2) + "\n")
    for i in range(first, last + 1):
        name = steps[i]
        progress.info(f"[{i + 1}/{len(steps)}] {name}: {STEPS[name].description}")
        try:
            STEPS[name].run(cfg, out, board)
        except BuildError:
            raise
        except (ValueError, FileNotFoundError, RuntimeError) as err:
            raise BuildError(f"step {name} failed: {err}") from err
    if last >= steps.index("estimate") and not _fits(out):
        raise _does_not_fit(json.loads((out / "summary.json").read_text()), out)
    return out


def check_inputs(cfg: BuildConfig, steps: list[str]) -> None:
    """Refuse, before the first step, inputs that would only fail after a long one.

    Checks the model spec (parsed, and lowerable when ``lower`` runs), the mode options,
    the ``--folding`` file (exists, JSON, node names and keys; matched to the network at
    ``fold``) and the optional extras the steps import.
    """
    from hwbed.models.spec import SpecError

    if cfg.weights not in ("trained", "random"):
        raise BuildError(f"--weights must be trained or random, got {cfg.weights!r}")
    if cfg.folding and cfg.target_fps:
        raise BuildError("--folding and --target-fps exclude each other; give one")
    if cfg.target_fps is not None and not 0 < cfg.target_fps < float("inf"):
        raise BuildError(f"--target-fps must be a positive number, got {cfg.target_fps:g}")
    if cfg.verify_n < 1 and "verify" in steps:
        raise BuildError(f"--verify-n must be at least 1, got {cfg.verify_n}")
    if cfg.checkpoint and "model" in steps and not Path(cfg.checkpoint).is_file():
        raise BuildError(f"checkpoint {cfg.checkpoint} does not exist")
    if cfg.quantize is not None or cfg.finetune_epochs:
        _check_quantize(cfg)
    if "lower" in steps:
        try:
            name = cfg.spec_name()
        except (SpecError, ValueError, OSError) as err:
            raise BuildError(str(err)) from err
        why = unbuildable(name)
        if why:
            raise BuildError(f"{name} cannot be built for an FPGA: {why}")
    if cfg.folding and "fold" in steps:
        from hwbed.fpga.finn.folding import FoldingError, check_folding_file

        try:
            check_folding_file(cfg.folding)
        except FoldingError as err:
            raise BuildError(str(err)) from err
    needs = [s for s in steps if s in NEEDS_EXPORT_EXTRA]
    missing = [m for m in EXPORT_MODULES if needs and not _importable(m)]
    if missing:
        what = f"the {' and '.join(needs)} step{'s' if len(needs) > 1 else ''}"
        verb = "need" if len(needs) > 1 else "needs"
        isare = "is" if len(missing) == 1 else "are"
        raise BuildError(
            f"{what} {verb} the export extra ({', '.join(missing)} {isare} not installed): "
            "pip install 'hwbed[export]'"
        )


def _check_quantize(cfg: BuildConfig) -> None:
    """Refuse a --quantize build that cannot work before anything runs."""
    from hwbed.models.checkpoint import CheckpointError, read_checkpoint
    from hwbed.models.quantize import QuantizeError, deployed_spec
    from hwbed.models.spec import SpecError, parse_spec

    if cfg.quantize is None:
        raise BuildError(
            f"--finetune-epochs {cfg.finetune_epochs} fine-tunes the network --quantize makes; "
            "add --quantize w8a8"
        )
    if cfg.finetune_epochs < 0:
        raise BuildError(f"--finetune-epochs must be 0 or more, got {cfg.finetune_epochs}")
    if cfg.calibration_images < 1:
        raise BuildError(f"--calibration-images must be at least 1, got {cfg.calibration_images}")
    if cfg.weights == "random":
        raise BuildError(
            "--quantize makes the deployed version of a trained float network; for a random "
            "quantized one use --model <spec>-w8a8 --weights random"
        )
    if cfg.checkpoint and cfg.model:
        raise BuildError("--quantize takes --checkpoint FLOAT.pt or --model <float spec>, not both")
    if not cfg.checkpoint and not cfg.model:
        raise BuildError(
            "--quantize needs a float network: --checkpoint FLOAT.pt (e.g. a trained resnet20), "
            "or --model <float spec> to train one first"
        )
    try:
        source = cfg.source_spec_name()
        deployed_spec(source, cfg.quantize)
        data = read_checkpoint(cfg.checkpoint)["data"] if cfg.checkpoint else None
    except (QuantizeError, SpecError, CheckpointError) as err:
        where = f"{cfg.checkpoint}: " if cfg.checkpoint and cfg.checkpoint not in str(err) else ""
        raise BuildError(f"{where}{err}") from None
    if data is not None and cfg.data and cfg.data != data:
        raise BuildError(
            f"--data {cfg.data}: {cfg.checkpoint} was trained on {data}, and --quantize "
            "calibrates and tests on the checkpoint's own data set; drop --data"
        )
    if not cfg.checkpoint and parse_spec(source).kd:
        raise BuildError(
            f"--model {source} would train a distilled network, which needs a teacher: train it "
            f"with python -m hwbed.train --model {source} --teacher TEACHER.pt, then build "
            "--checkpoint <its model.pt> --quantize " + cfg.quantize
        )


def unbuildable(spec: str) -> str | None:
    """Why ``spec`` cannot be lowered to an integer dataflow graph, or None if it can."""
    from hwbed.models.spec import parse_spec

    s = parse_spec(spec)
    if not s.quantized:
        example = f"{s.arch}-w1a1" if s.family == "bnn-pynq" else f"{s.arch}-xnor, {s.arch}-w4a4"
        how = [w for w, on in (("distilled", s.kd), ("pruned", s.prune)) if on]
        what = " and ".join(how) + " in full precision" if how else "full precision"
        deploy = ""
        if s.family != "bnn-pynq":
            deploy = (
                "; build its deployed 8-bit version with --quantize w8a8 (e.g. --checkpoint "
                "FLOAT.pt --quantize w8a8: quantized and calibrated on its training split)"
            )
        return (
            f"it is a float network ({what}, no quantizers), and "
            f"only quantized variants lower to integer hardware; use e.g. {example}{deploy}"
        )
    return None


def _importable(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
