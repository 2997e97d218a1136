"""One factory for every executable kind: ``make_executable(kind, source, **options)``.

``source`` is a build folder (``build/<model>-<target>/``), a checkpoint (``model.pt``) or,
for graph kinds, a saved graph. Kinds:

| kind | what runs | exact |
| --- | --- | --- |
| ``twin`` | the Brevitas (or float) torch module at its uint8 boundary | the definition |
| ``sim`` | the DSP48 simulator's fast exact path | bit-exact |
| ``sim-reference`` | the integer graph on the plain numpy reference executor | bit-exact |
| ``ort`` | onnxruntime on the exported QONNX in standard ops (float emulation) | no |
| ``qonnx`` | qonnx ``execute_onnx`` on the exported QONNX (slow) | no |
| ``remote`` | a deploy query server (``url=``, ``token=`` or ``token_file=``) | as served |
| ``finn`` | FINN's PYNQ driver on a board (``bitfile=``, ``driver_dir=``) | bit-exact |

``remote=URL`` is accepted as the kind, as on the command line.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hwbed.ir.executable import BaseExecutable, Executable, ReferenceExecutable, TorchTwin

from .inputs import AttackError

KINDS = ("twin", "sim", "sim-reference", "ort", "qonnx", "remote", "finn")


def make_executable(kind: str, source: str | Path | None = None, **options: Any) -> Executable:
    """The executable of ``kind`` for ``source``; errors name the kind or the missing file."""
    kind = str(kind)
    if kind.startswith("remote="):
        kind, options["url"] = "remote", kind.split("=", 1)[1]
    if kind not in KINDS:
        raise AttackError(f"unknown executable kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "remote":
        return _remote(source, **options)
    if kind == "finn":
        return _finn(source, **options)
    if source is None:
        raise AttackError(f"executable {kind!r} needs a build folder or checkpoint")
    path = Path(source)
    if not path.exists():
        raise AttackError(f"{path}: no such build folder or checkpoint")
    if kind == "twin":
        return _twin(path, **options)
    if kind in ("sim", "sim-reference"):
        from hwbed.fpga.build.sources import graph_of
        from hwbed.sim.executable import SimExecutable

        graph = graph_of(path)
        return SimExecutable(graph) if kind == "sim" else ReferenceExecutable(graph)
    return OnnxExecutable(path, engine=kind, **options)


def checkpoint_of(path: Path) -> Path:
    """``model.pt`` of a build folder, or the checkpoint itself."""
    if path.is_dir():
        if not (path / "model.pt").is_file():
            raise AttackError(f"{path}: no model.pt in this folder")
        return path / "model.pt"
    if path.suffix != ".pt":
        raise AttackError(f"{path}: expected a build folder or a checkpoint .pt")
    return path


def _twin(path: Path, device: str = "cpu") -> TorchTwin:
    from hwbed.fpga.build.sources import load_twin

    return load_twin(checkpoint_of(path), device)


class OnnxExecutable(BaseExecutable):
    """The exported QONNX model on onnxruntime (``engine="ort"``) or qonnx (``"qonnx"``).

    Both run the float graph FINN starts from, not the integer graph: the float emulation
    users would otherwise reach for. Uses the build folder's ``model.qonnx.onnx``, or exports
    the checkpoint to a temporary file.
    """

    def __init__(self, source: str | Path, engine: str = "ort", max_batch: int = 256):
        from hwbed.models.checkpoint import load_checkpoint

        path = Path(source)
        ckpt = checkpoint_of(path)
        model, meta = load_checkpoint(ckpt)
        super().__init__(f"{engine}:{meta.spec.name}", meta.input_shape, meta.classes)
        built = path / "model.qonnx.onnx" if path.is_dir() else None
        self.engine = engine
        if built is not None and built.is_file() and engine == "ort":
            self._qonnx = str(built)
        else:
            from hwbed.fpga.export.qonnx_export import export_qonnx

            self._tmp = tempfile.TemporaryDirectory(prefix="hwbed-onnx-")
            self._qonnx = str(Path(self._tmp.name) / "model.qonnx.onnx")
            export_qonnx(model, meta.input_shape, self._qonnx)
        if engine == "ort":
            from hwbed.fpga.export.ort import OrtRunner, to_onnxruntime

            self._runner = OrtRunner(to_onnxruntime(self._qonnx), max_batch=max_batch)
        else:
            from hwbed.fpga.export.qonnx_io import load_qonnx

            self._model = load_qonnx(self._qonnx)

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels.astype(np.float32) / 255.0
        if self.engine == "ort":
            return self._runner(x)
        from hwbed.fpga.export.qonnx_export import run_qonnx

        return run_qonnx(self._model, x)


def _remote(
    source: str | Path | None,
    url: str | None = None,
    token: str | None = None,
    token_file: str | Path | None = None,
    **options,
) -> Executable:
    from hwbed.fpga.deploy.remote import RemoteExecutable

    if url is None:
        raise AttackError("executable 'remote' needs url= (or the kind remote=URL)")
    if token is None:
        if token_file is None and source is not None:
            token_file = Path(source) / "deploy" / "token"
        if token_file is None or not Path(token_file).is_file():
            raise AttackError(
                f"executable 'remote': no token (token=, token_file=, or a build "
                f"folder with deploy/token); looked for {token_file}"
            )
        token = Path(token_file).read_text().strip()
    return RemoteExecutable(url, token, **options)


def _finn(
    source: str | Path | None,
    bitfile: str | Path | None = None,
    driver_dir: str | Path | None = None,
    **options,
) -> Executable:
    try:
        import pynq  # noqa: F401  (FINN's driver runs on PYNQ only)
    except ModuleNotFoundError:
        raise AttackError(
            "executable 'finn' runs on a PYNQ board (pynq is not importable "
            "here); serve it with the deploy package and use remote=URL"
        ) from None
    from hwbed.fpga.deploy.board_backend import open_board

    if bitfile is None or driver_dir is None:
        raise AttackError("executable 'finn' needs bitfile= and driver_dir=")
    if "num_classes" not in options:
        raise AttackError("executable 'finn' needs num_classes=")
    return open_board(bitfile, driver_dir, **options)
