"""What the QONNX exporter and the onnxruntime rendering share: the export's error, model loading,
the opset fix and fixed-size batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from qonnx.core.modelwrapper import ModelWrapper


class ExportError(RuntimeError):
    """A network (or one of its modules) that cannot be exported or cleaned up."""


def fix_opset_order(model: onnx.ModelProto) -> onnx.ModelProto:
    """Put the standard ONNX domain first in ``opset_import`` (in place; pitfall P1).

    qonnx's constant folding reads ``opset_import[0].version`` as the ONNX opset; the dynamo
    exporter lists the qonnx custom domain first.
    """
    imports = sorted(model.opset_import, key=lambda o: o.domain not in ("", "ai.onnx"))
    del model.opset_import[:]
    model.opset_import.extend(imports)
    return model


def load_qonnx(model_or_path: ModelWrapper | onnx.ModelProto | str | Path) -> ModelWrapper:
    """A ModelWrapper for a QONNX model given as wrapper, proto or file."""
    if isinstance(model_or_path, ModelWrapper):
        return model_or_path
    if isinstance(model_or_path, onnx.ModelProto):
        return ModelWrapper(model_or_path)
    return ModelWrapper(str(model_or_path))


def batches(x: np.ndarray, size: int) -> list[np.ndarray]:
    """``x`` cut into batches of exactly ``size`` rows, the last one zero-padded."""
    pad = -len(x) % size
    if pad:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), dtype=x.dtype)])
    return [x[i : i + size] for i in range(0, len(x), size)]
