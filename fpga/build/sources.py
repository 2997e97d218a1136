"""What a build folder, saved graph or checkpoint gives the executables: its graph and its twin.

A folder holding ``graph.json`` (or a saved graph) is loaded with
:func:`hwbed.ir.executable.load_graph`; a checkpoint (``.pt``, or a folder's ``model.pt``
where the folder holds no graph) is lowered first.
"""

from __future__ import annotations

from pathlib import Path

from hwbed.fpga.lowering.lower import lower_checkpoint
from hwbed.ir.executable import GRAPH_SUFFIXES, TorchTwin, load_graph
from hwbed.ir.graph import Graph
from hwbed.ir.types import GraphError
from hwbed.models.checkpoint import load_checkpoint


def graph_of(source: str | Path) -> Graph:
    """The integer graph of a build folder, a saved graph or a checkpoint (lowered)."""
    path = Path(source)
    if path.suffix == ".pt":
        return lower_checkpoint(path)
    if path.is_dir():
        if not (path / "graph.json").is_file() and (path / "model.pt").is_file():
            return lower_checkpoint(path / "model.pt")
    elif path.suffix not in GRAPH_SUFFIXES:
        raise GraphError(f"{path}: expected a build folder, graph .json/.npz or checkpoint .pt")
    return load_graph(path)


def load_twin(checkpoint: str | Path, device: str = "cpu") -> TorchTwin:
    """The checkpoint's Brevitas (or float) twin at its uint8 boundary: the definition the
    exact paths must equal."""
    model, meta = load_checkpoint(checkpoint, device=device)
    twin = TorchTwin(model, f"twin:{meta.spec.name}", meta.input_shape, meta.classes, device)
    twin.bit_exact = True
    return twin
