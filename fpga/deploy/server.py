"""HTTP query server: predictions of any Executable behind a bearer token (stdlib only).

Protocol (version 1; ``docs/deploy.md``):

- ``GET /v1/info`` -> JSON: name, input_shape [C, H, W], num_classes, bit_exact, returns
  (``scores`` or ``labels``), queries (images answered), requests, max_batch, max_bytes.
- ``POST /v1/predict`` with ``Content-Type: application/octet-stream``, a body of uint8 pixels
  [N, C, H, W] in C order, and ``X-Shape: N,C,H,W`` (or ``X-Batch: N``) -> float32 scores
  [N, num_classes]: JSON ``{"shape", "scores"}``, or raw little-endian float32 with
  ``X-Shape: N,K`` when the request says ``Accept: application/octet-stream``.

Every request needs ``Authorization: Bearer <token>`` (401). Too many images or bytes give
413, a malformed request 400 with a message, a prediction slower than the timeout 504. Errors
are JSON ``{"error": message}``; requests are logged without their pixels.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from hwbed.attacks.executable import BaseExecutable, Executable
from hwbed.fpga.graph import SCHEMA, Graph, GraphError
from hwbed.fpga.reference import execute

log = logging.getLogger("hwbed.fpga.deploy")

PROTOCOL_VERSION = 1
DRAIN_LIMIT = 1 << 20  # bytes of a rejected body read anyway, so the client sees the reply


class RequestError(Exception):
    """A request the server refuses: HTTP status and the message sent back."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ReferenceExecutable(BaseExecutable):
    """The plain numpy reference executor of a lowered graph, as an Executable.

    Bit-exact by definition: it states the graph's integer semantics that the simulator and
    the hardware must reproduce. The graph's output tensor holds the logits.
    """

    bit_exact = True

    def __init__(self, graph: Graph, name: str | None = None):
        super().__init__(
            name or f"{graph.meta.get('model', 'graph')}-reference",
            graph_input_chw(graph),
            graph.tensors[graph.output].shape[-1],
        )
        self.graph = graph

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        frame = self.graph.tensors[self.graph.input].shape  # NHWC, or flat
        nhwc = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)).reshape(len(pixels), *frame)
        out = execute(self.graph, nhwc)
        return np.asarray(out, dtype=np.float32).reshape(len(pixels), -1)


def graph_input_chw(graph: Graph) -> tuple[int, int, int]:
    """The (C, H, W) image a graph takes: ``meta['input_chw']``, else its NHWC input tensor."""
    if "input_chw" in graph.meta:
        return tuple(int(v) for v in graph.meta["input_chw"])
    shape = graph.tensors[graph.input].shape
    if len(shape) != 3:
        raise GraphError(
            f"graph input {graph.input!r} has shape {shape}; cannot tell (C, H, W) "
            "without meta['input_chw']"
        )
    h, w, c = shape
    return (c, h, w)


def find_graph(path: str | Path) -> Path:
    """A graph JSON, or the one in a build folder (``graph.json`` first, then any hwbed graph)."""
    path = Path(path)
    if not path.is_dir():
        if path.with_suffix(".json").is_file():
            return path.with_suffix(".json")
        raise FileNotFoundError(f"{path}: no such graph or build folder")
    for candidate in [path / "graph.json", *sorted(path.glob("*.json"))]:
        try:
            if candidate.is_file() and json.loads(candidate.read_text()).get("schema") == SCHEMA:
                return candidate
        except (ValueError, AttributeError):  # not JSON, or JSON but not an object
            continue
    raise FileNotFoundError(f"{path}: no hwbed graph JSON (schema {SCHEMA!r}) in this folder")


def graph_executable(path: str | Path, backend: str = "auto") -> Executable:
    """Load a graph and wrap it: the DSP48 simulator (``sim``) or the reference executor.

    ``auto`` takes the simulator when ``hwbed.sim.executable`` exists, else the reference.
    """
    graph = Graph.load(find_graph(path))
    if backend in ("auto", "sim"):
        try:
            from hwbed.sim.executable import SimExecutable
        except ModuleNotFoundError as err:
            if backend == "sim" or err.name != "hwbed.sim.executable":
                raise
        else:
            return SimExecutable(graph)
    if backend not in ("auto", "reference"):
        raise ValueError(f"unknown graph backend {backend!r} (auto, sim, reference)")
    return ReferenceExecutable(graph)


class QueryServer:
    """Serve ``executable`` on ``host:port`` (port 0: any free port) until :meth:`close`.

    Predictions run one at a time on a worker thread, so backends need not be thread-safe;
    ``timeout`` bounds both each socket read and each prediction (the request then gets
    504 while the prediction finishes in the background, uncounted).
    """

    def __init__(
        self,
        executable: Executable,
        token: str,
        host: str = "127.0.0.1",
        port: int = 8088,
        max_batch: int = 1024,
        max_bytes: int = 64 << 20,
        timeout: float = 60.0,
    ):
        if not token:
            raise ValueError("the server needs a non-empty bearer token")
        if max_batch < 1 or max_bytes < 1 or timeout <= 0:
            raise ValueError("max_batch, max_bytes and timeout must be positive")
        self.executable = executable
        self.max_batch = int(max_batch)
        self.max_bytes = int(max_bytes)
        self.timeout = float(timeout)
        self.queries = 0
        self.requests = 0
        self._token = token.encode()
        self._counter_lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hwbed-predict")
        self._thread: threading.Thread | None = None
        handler = type("Handler", (_Handler,), {"app": self, "timeout": self.timeout})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def info(self) -> dict[str, Any]:
        exe = self.executable
        return {
            "version": PROTOCOL_VERSION,
            "name": exe.name,
            "input_shape": list(exe.input_shape),
            "num_classes": exe.num_classes,
            "bit_exact": bool(exe.bit_exact),
            "returns": getattr(exe, "returns", "scores"),
            "dtype": "uint8",
            "layout": "NCHW",
            "queries": self.queries,
            "requests": self.requests,  # received, this one included
            "max_batch": self.max_batch,
            "max_bytes": self.max_bytes,
        }

    def authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._token
        )

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Run the executable on the worker thread within the timeout; count answered images."""
        future = self._worker.submit(self.executable, pixels)
        try:
            scores = np.asarray(future.result(timeout=self.timeout), dtype=np.float32)
        except FutureTimeout as err:
            raise RequestError(
                HTTPStatus.GATEWAY_TIMEOUT, f"prediction took longer than {self.timeout:g} s"
            ) from err
        if scores.shape != (len(pixels), self.executable.num_classes):
            raise RuntimeError(
                f"backend returned scores of shape {scores.shape}, expected "
                f"{(len(pixels), self.executable.num_classes)}"
            )
        with self._counter_lock:
            self.queries += len(pixels)
        return scores

    def count_request(self) -> None:
        with self._counter_lock:
            self.requests += 1

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> QueryServer:
        """Serve on a daemon thread; returns self."""
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), name="hwbed-server", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()
        self._worker.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> QueryServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    """One request; the owning :class:`QueryServer` is the class attribute ``app``."""

    app: QueryServer
    server_version = "hwbed-query/1"

    def do_GET(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def _handle(self, route) -> None:
        start = time.perf_counter()
        self.app.count_request()
        self._unread = 0
        self._images = 0
        status = HTTPStatus.OK
        try:
            try:
                self._unread = self._content_length()
                route()
            except RequestError as err:
                status = err.status
                self._drain()
                self._send_json(status, {"error": err.message})
            except (BrokenPipeError, ConnectionResetError):
                raise
            except Exception as err:  # the server must outlive any backend failure
                status = HTTPStatus.INTERNAL_SERVER_ERROR
                log.exception("%s %s failed", self.command, self.path)
                self._drain()
                self._send_json(status, {"error": f"internal error: {type(err).__name__}: {err}"})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            log.warning(
                "%s %s %s: client went away", self.client_address[0], self.command, self.path
            )
        log.info(
            "%s %s %s %d n=%d %.1f ms",
            self.client_address[0],
            self.command,
            self.path,
            status,
            self._images,
            1000 * (time.perf_counter() - start),
        )

    def _get(self) -> None:
        self._check_auth()
        if self.path != "/v1/info":
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: GET {self.path}")
        self._send_json(HTTPStatus.OK, self.app.info())

    def _post(self) -> None:
        app = self.app
        self._check_auth()
        if self.path != "/v1/predict":
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {self.path}")
        if self.headers.get("Content-Length") is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        if self._unread > app.max_bytes:
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {self._unread} bytes exceeds max_bytes={app.max_bytes}",
            )
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/octet-stream":
            raise RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type must be application/octet-stream, got {ctype!r}",
            )
        n = self._batch()
        body = self._read_body()
        expect = n * math.prod(app.executable.input_shape)
        if len(body) != expect:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"body has {len(body)} bytes, expected {expect} = {n} images of "
                f"uint8 {list(app.executable.input_shape)}",
            )
        pixels = np.frombuffer(body, dtype=np.uint8).reshape(n, *app.executable.input_shape)
        self._images = n
        scores = app.predict(pixels)
        extra = {"X-Queries": str(app.queries)}
        if "application/octet-stream" in self.headers.get("Accept", ""):
            extra["X-Shape"] = ",".join(map(str, scores.shape))
            self._send(
                HTTPStatus.OK, scores.astype("<f4").tobytes(), "application/octet-stream", extra
            )
        else:
            self._send_json(
                HTTPStatus.OK, {"shape": list(scores.shape), "scores": scores.tolist()}, extra
            )

    def _batch(self) -> int:
        """N from ``X-Shape: N,C,H,W`` (checked against the input shape) or ``X-Batch: N``."""
        shape_header, batch_header = self.headers.get("X-Shape"), self.headers.get("X-Batch")
        expect = list(self.app.executable.input_shape)
        try:
            if shape_header is not None:
                shape = [int(v) for v in shape_header.split(",")]
                if len(shape) != 4 or shape[1:] != expect:
                    raise RequestError(
                        HTTPStatus.BAD_REQUEST,
                        f"X-Shape {shape_header!r} does not match [N, "
                        f"{', '.join(map(str, expect))}]",
                    )
                n = shape[0]
            elif batch_header is not None:
                n = int(batch_header)
            else:
                raise RequestError(
                    HTTPStatus.BAD_REQUEST, "X-Shape: N,C,H,W or X-Batch: N is required"
                )
        except ValueError as err:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"X-Shape / X-Batch must be integers: {err}"
            ) from err
        if n < 1:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"batch must be at least 1, got {n}")
        if n > self.app.max_batch:
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"batch of {n} exceeds max_batch={self.app.max_batch}",
            )
        return n

    def _check_auth(self) -> None:
        if not self.app.authorized(self.headers.get("Authorization")):
            raise RequestError(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")

    def _content_length(self) -> int:
        text = self.headers.get("Content-Length", "0").strip()
        if not (text.isascii() and text.isdigit()):
            self.close_connection = True  # the body's end is unknown
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"Content-Length must be a non-negative integer, got {text!r}",
            )
        return int(text)

    def _read_body(self) -> bytes:
        length, self._unread = self._unread, 0
        try:
            body = self.rfile.read(length)
        except TimeoutError as err:
            self.close_connection = True
            raise RequestError(HTTPStatus.REQUEST_TIMEOUT, "timed out reading the body") from err
        if len(body) != length:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"body ended after {len(body)} of {length} bytes"
            )
        return body

    def _drain(self) -> None:
        """Read (up to DRAIN_LIMIT bytes of) an unread body so that closing doesn't reset it."""
        if 0 < self._unread <= DRAIN_LIMIT:
            try:
                self.rfile.read(self._unread)
            except OSError:  # the client went away mid-body: nothing left to answer
                self.close_connection = True
        elif self._unread:
            self.close_connection = True
        self._unread = 0

    def _send_json(self, status: HTTPStatus, doc: dict, extra: dict | None = None) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", extra)

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="hwbed"')
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-") -> None:
        """Silenced: :meth:`_handle` logs one line per request (without pixels)."""

    def log_message(self, format: str, *args) -> None:
        log.warning("%s %s", self.client_address[0], format % args)


def read_token(path: str | Path) -> str:
    """The token in a token file (surrounding whitespace dropped); refuses an empty one."""
    token = Path(path).read_text().strip()
    if not token or any(ch.isspace() for ch in token):
        raise ValueError(f"{path}: the token file must hold one token without whitespace")
    return token


def parse_shape(text: str) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in text.split(","))
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"expected C,H,W, got {text!r}")
    return shape


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hwbed.fpga.deploy.server", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--graph",
        help="lowered graph JSON or build folder (for pynq: where "
        "the class count and image shape come from)",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "sim", "reference", "pynq"],
        help="auto: the simulator if installed, else the reference executor",
    )
    parser.add_argument("--bitfile", help="pynq: the FINN bitfile (.bit)")
    parser.add_argument("--driver-dir", help="pynq: FINN's generated driver folder")
    parser.add_argument("--num-classes", type=int, help="pynq without --graph: class count")
    parser.add_argument(
        "--input-shape",
        type=parse_shape,
        help="pynq without --graph: C,H,W when the driver's input is flat",
    )
    parser.add_argument(
        "--outputs",
        default="labels",
        choices=["labels", "scores"],
        help="pynq: the accelerator ends in LabelSelect (labels) or not",
    )
    parser.add_argument("--hw-batch", type=int, default=64, help="pynq: frames per DMA transfer")
    parser.add_argument("--fclk-mhz", type=float, default=100.0, help="pynq: the build's clock")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--token-file", required=True, help="file holding the bearer token")
    parser.add_argument("--max-batch", type=int, default=1024)
    parser.add_argument("--max-bytes", type=int, default=64 << 20)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per read/prediction")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    if args.backend == "pynq":
        if not (args.bitfile and args.driver_dir):
            parser.error("--backend pynq needs --bitfile and --driver-dir")
        from .board_backend import open_board

        num_classes, input_shape = args.num_classes, args.input_shape
        if args.graph:
            graph = Graph.load(find_graph(args.graph))
            num_classes = num_classes or graph.tensors[graph.output].shape[-1]
            input_shape = input_shape or graph_input_chw(graph)
        if not num_classes:
            parser.error("--backend pynq needs --graph or --num-classes")
        exe = open_board(
            args.bitfile,
            args.driver_dir,
            num_classes,
            input_shape=input_shape,
            outputs=args.outputs,
            hw_batch=args.hw_batch,
            fclk_mhz=args.fclk_mhz,
        )
    else:
        if not args.graph:
            parser.error(f"--backend {args.backend} needs --graph")
        exe = graph_executable(args.graph, args.backend)
    server = QueryServer(
        exe,
        read_token(args.token_file),
        args.host,
        args.port,
        args.max_batch,
        args.max_bytes,
        args.timeout,
    )
    log.info(
        "serving %s (%s, input %s, %d classes) on %s",
        exe.name,
        type(exe).__name__,
        list(exe.input_shape),
        exe.num_classes,
        server.url,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.close()


if __name__ == "__main__":
    main()
