"""Lowering entry point: a Brevitas twin (or checkpoint) -> validated integer dataflow graph."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from hwbed.fpga.lowering.frontend import lower_bnn_pynq, lower_resnet, module_names
from hwbed.fpga.lowering.passes import DEFAULT_PASSES, run_passes
from hwbed.ir.checks import check_graph
from hwbed.ir.graph import Graph
from hwbed.ir.types import GraphError
from hwbed.models.resnet import ResNet
from hwbed.models.spec import ModelSpec, parse_spec


def lower(
    model: nn.Module, spec: ModelSpec | str, shape_chw: tuple[int, int, int], passes=DEFAULT_PASSES
) -> Graph:
    """Lower ``model`` (eval mode, built for ``spec``) on inputs of shape (C, H, W).

    The result passes the checks :meth:`Graph.load` applies (:func:`check_graph`). The
    front-end proves that the graph can equal the twin bit for bit (every quantizer scale a
    power of two, every accumulator within float32's exact integers) or raises
    :class:`GraphError` naming the layer; refusals name modules as ``<spec> <module path>``.
    """
    spec = parse_spec(spec)
    model.eval()
    if spec.family == "bnn-pynq" and not spec.quantized:
        raise GraphError(
            f"{spec.name}: float BNN-PYNQ networks do not lower to an integer graph; "
            f"use w<W>a<A> (e.g. {spec.at_precision('w1a1').name}), or run the float twin"
        )
    with module_names(model, spec.name):
        if isinstance(model, ResNet):
            graph = lower_resnet(model, tuple(shape_chw))
        elif spec.family == "bnn-pynq":
            graph = lower_bnn_pynq(model, tuple(shape_chw), spec.name)
        else:
            raise GraphError(f"{spec.name}: no lowering for {type(model).__name__}")
    graph = run_passes(graph, passes)
    check_graph(graph)
    return graph


def lower_checkpoint(path: str | Path, passes=DEFAULT_PASSES) -> Graph:
    """Lower a trained checkpoint; the graph's meta records where it came from.

    The meta path is absolute here; :meth:`Graph.save` stores it relative to the graph's folder
    when the checkpoint lies inside it (a build folder stays valid when copied or moved).
    """
    from hwbed.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(path)
    graph = lower(model, meta.spec, meta.input_shape, passes)
    graph.meta.update(checkpoint=str(Path(path).resolve()), data=meta.data)
    return graph
