"""The cost table: clean accuracy, memory, NCC, DSP48 work, FPGA estimates and fps per model.

A build folder's ``summary.json`` gives every column (one row per model and target). A model
attacked from a checkpoint has no build: its memory and NCC are computed from the checkpoint
(:func:`hwbed.models.cost.model_cost`, METHOD.md's definitions) and the FPGA columns stay empty.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from hwbed.report.frame import ReportError, split_model

COLUMNS = [
    "model",
    "variant",
    "target",
    "clean_acc",
    "memory_mb",
    "ncc_m",
    "dsp_slice_ops",
    "dsp48_slices",
    "lut",
    "bram18",
    "dsp",
    "fits",
    "fps",
    "latency_ms",
    "source",
]


def build_row(folder: str | Path) -> dict:
    """One cost row from a build folder's ``summary.json``."""
    folder = Path(folder)
    path = folder / "summary.json"
    if not path.is_file():
        raise ReportError(f"{folder}: not a build folder (no summary.json)")
    try:
        s = json.loads(path.read_text())
        res = s["resources"]
        return {
            "model": s["model"],
            "variant": split_model(s["model"])[1],
            "target": s["target"],
            "clean_acc": s.get("test_accuracy"),
            "memory_mb": s["memory_mb"],
            "ncc_m": s["ncc_m"],
            "dsp_slice_ops": s["dsp_slice_ops"]["ops"]["total"],
            "dsp48_slices": s["dsp_slice_ops"]["slices"],
            "lut": res["LUT"]["used"],
            "bram18": res["BRAM_18K"]["used"],
            "dsp": res["DSP"]["used"],
            "fits": s["fits"],
            "fps": s["fps"],
            "latency_ms": s["latency_ms"],
            "source": str(folder),
        }
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: not a build summary ({type(err).__name__}: {err})") from None


def checkpoint_row(path: str | Path) -> dict:
    """Memory and NCC of a trained checkpoint (no FPGA columns: it was not built)."""
    from hwbed.models.checkpoint import CheckpointError, load_checkpoint
    from hwbed.models.cost import model_cost

    try:
        model, meta = load_checkpoint(path)
    except (CheckpointError, FileNotFoundError) as err:
        raise ReportError(f"{path}: {err}") from None
    cost = model_cost(model, meta.spec, tuple(meta.input_shape))
    row = dict.fromkeys(COLUMNS, np.nan)
    row.update(
        model=meta.spec.name,
        variant=split_model(meta.spec.name)[1],
        target="-",
        clean_acc=meta.card.get("test_accuracy", np.nan),
        memory_mb=cost.memory_mb,
        ncc_m=cost.ncc_m,
        fits=None,
        source=str(path),
    )
    return row


def cost_table(cells: pd.DataFrame | None = None, builds: list[str | Path] = ()) -> pd.DataFrame:
    """Cost rows of the given build folders and of every model the store's cells name.

    A cell's ``build`` is its build folder (its summary gives the row) or its checkpoint;
    models already covered by a given build are not repeated. A source that no longer exists
    (a store read on another machine) gives a row with empty costs and ``source`` ending in
    ``(missing)``. ``clean_acc`` is the model card's accuracy on the whole test split.
    """
    rows = [build_row(b) for b in builds]
    seen = {Path(r["source"]).resolve() for r in rows}
    sources = [] if cells is None else sorted(set(cells.build.dropna()))
    for source in sources:
        path = Path(source)
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        if path.is_dir():
            rows.append(build_row(path))
        elif path.is_file():
            rows.append(checkpoint_row(path))
        else:  # a store read on another machine: keep the model, leave its costs empty
            model = cells.loc[cells.build == source, "model"].iloc[0]
            row = dict.fromkeys(COLUMNS, np.nan)
            row.update(model=model, variant=split_model(model)[1], target="-", fits=None)
            rows.append({**row, "source": f"{source} (missing)"})
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values(["model", "target"], kind="stable").reset_index(drop=True)
