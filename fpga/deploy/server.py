"""HTTP query server: predictions of any Executable behind a bearer token (stdlib only).

Protocol (version 1; ``docs/deploy.md``):

- ``GET /v1/info`` -> JSON: name, input_shape [C, H, W], num_classes, bit_exact, returns
  (``scores`` or ``labels``), queries (images answered), requests, max_batch, max_bytes.
- ``POST /v1/predict`` with ``Content-Type: application/octet-stream``, a body of uint8 pixels
  [N, C, H, W] in C order, and ``X-Shape: N,C,H,W`` (or ``X-Batch: N``) -> float32 scores
  [N, num_classes]: JSON ``{"shape", "scores"}``, or raw little-endian float32 with
  ``X-Shape: N,K`` when the request says ``Accept: application/octet-stream``.

Every request needs ``Authorization: Bearer <token>`` (401). Too many images or bytes give
413, a malformed request 400 with a message, a request that does not arrive within the
deadline 408, more than ``max_inflight`` requests at once 503 (with ``Retry-After``), a
prediction slower than the timeout 504. Every error is JSON ``{"error": message}``; requests
are logged without their pixels.
"""

from __future__ import annotations

import argparse
import errno
import hmac
import io
import json
import logging
import math
import os
import queue
import socket
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from hwbed.ir.executable import Executable, ReferenceExecutable, graph_input_chw, load_graph
from hwbed.ir.types import GraphError

log = logging.getLogger("hwbed.fpga.deploy")

PROTOCOL_VERSION = 1
DRAIN_LIMIT = 1 << 20  # bytes of a rejected body read anyway, so the client sees the reply
BACKLOG = 1024  # listen queue; the kernel caps it at net.core.somaxconn
RETRY_AFTER_S = 1  # the Retry-After of a 503
_STOP = object()  # ends the batcher's queue


class StartupError(ValueError):
    """A server that cannot start: ``what`` went wrong with ``culprit`` (a file, a port)."""

    def __init__(self, what: str, culprit: str | Path):
        self.what = " ".join(str(what).split())  # one line
        self.culprit = str(culprit)
        super().__init__(f"{self.what} ({self.culprit})")


class _ClientGone(Exception):
    """The client reset the connection or did not take the reply in time."""


class RequestError(Exception):
    """A request the server refuses: HTTP status and the message sent back."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def graph_executable(path: str | Path, backend: str = "auto") -> Executable:
    """Load a graph (:func:`~hwbed.ir.executable.load_graph`) and wrap it: the DSP48 simulator
    (``sim``) or the reference executor.

    ``auto`` takes the simulator when ``hwbed.sim.executable`` exists, else the reference.
    """
    graph = load_graph(path)
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


class _Batcher:
    """One worker thread runs the executable, so backends need not be thread-safe.

    Requests that queue up while it is busy are run as one batch (up to ``max_batch``
    images), so that concurrent one-image requests cost one call, not one each. A merged
    batch that fails is retried request by request, so a failure is only blamed on its own.
    """

    def __init__(self, executable: Executable, max_batch: int):
        self.executable = executable
        self.max_batch = max_batch
        self.calls = 0  # executable calls made (fewer than requests when batches merge)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._held: Any = None  # a job (or _STOP) that did not fit the last batch
        self._thread = threading.Thread(target=self._run, name="hwbed-predict", daemon=True)
        self._thread.start()

    def submit(self, pixels: np.ndarray) -> Future:
        future: Future = Future()
        self._queue.put((pixels, future))
        return future

    def close(self) -> None:
        """Stop after the running batch; queued requests are cancelled."""
        self._queue.put(_STOP)

    def _next_batch(self) -> list[tuple] | None:
        first, self._held = (self._held or self._queue.get()), None
        if first is _STOP:
            return None
        jobs, n = [first], len(first[0])
        while n < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP or n + len(job[0]) > self.max_batch:
                self._held = job
                break
            jobs.append(job)
            n += len(job[0])
        return jobs

    def _run(self) -> None:
        while (jobs := self._next_batch()) is not None:
            jobs = [job for job in jobs if job[1].set_running_or_notify_cancel()]  # not 504'd
            if len(jobs) > 1:
                try:
                    scores = self._call(np.concatenate([pixels for pixels, _ in jobs]))
                    if scores.shape[0] != sum(len(pixels) for pixels, _ in jobs):
                        raise RuntimeError("merged batch: wrong number of rows")
                except Exception:  # retried one by one below, so the culprit alone fails
                    pass
                else:
                    start = 0
                    for pixels, future in jobs:
                        future.set_result(scores[start : start + len(pixels)])
                        start += len(pixels)
                    continue
            for pixels, future in jobs:
                try:
                    future.set_result(self._call(pixels))
                except Exception as err:
                    future.set_exception(err)
        while True:  # closed: cancel what is still queued
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP:
                job[1].cancel()

    def _call(self, pixels: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.asarray(self.executable(pixels), dtype=np.float32)


class _HTTPServer(ThreadingHTTPServer):
    """A thread per connection, a real listen backlog, and no tracebacks for lost clients."""

    request_queue_size = BACKLOG
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, OSError):  # a client that went away or stalled: one line
            log.warning("%s: connection lost: %s", client_address[0], err)
        else:
            log.exception("%s: connection failed", client_address[0])


class QueryServer:
    """Serve ``executable`` on ``host:port`` (port 0: any free port) until :meth:`close`.

    - ``deadline``: seconds for a request's headers and body to arrive, in total (else 408
      and the connection is closed), and for the reply to be taken.
    - ``max_inflight``: requests handled at once; more get 503 with ``Retry-After``.
    - ``timeout``: seconds for a prediction, its wait in the queue included (else 504; the
      prediction still finishes in the background, uncounted).

    Predictions run on one worker thread (see :class:`_Batcher`); ``queries`` counts the
    images answered with 200.
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
        deadline: float = 10.0,
        max_inflight: int = 64,
    ):
        if not token:
            raise ValueError("the server needs a non-empty bearer token")
        if min(max_batch, max_bytes, max_inflight) < 1 or min(timeout, deadline) <= 0:
            raise ValueError(
                "max_batch, max_bytes, max_inflight, timeout and deadline must be positive"
            )
        self.executable = executable
        self.max_batch = int(max_batch)
        self.max_bytes = int(max_bytes)
        self.timeout = float(timeout)
        self.deadline = float(deadline)
        self.max_inflight = int(max_inflight)
        self.queries = 0
        self.requests = 0
        self.in_flight = 0  # requests holding one of the max_inflight places
        self.rejected = 0  # requests refused with 503
        self._token = token.encode()
        self._counter_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.max_inflight)
        self._thread: threading.Thread | None = None
        handler = type("Handler", (_Handler,), {"app": self, "timeout": self.deadline})
        self.httpd = _HTTPServer((host, port), handler)  # binds: OSError if the port is taken
        self._batcher = _Batcher(executable, self.max_batch)

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

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, int]:
        """Scores of ``pixels`` within the timeout, and the query total after counting them."""
        future = self._batcher.submit(pixels)
        try:
            scores = future.result(timeout=self.timeout)
        except FutureTimeout as err:
            future.cancel()  # still queued: never runs
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
            return scores, self.queries

    def count_request(self) -> None:
        with self._counter_lock:
            self.requests += 1

    def acquire_slot(self) -> bool:
        """A place among the ``max_inflight`` requests, without waiting."""
        taken = self._slots.acquire(blocking=False)
        with self._counter_lock:
            self.in_flight += taken
            self.rejected += not taken
        return taken

    def release_slot(self) -> None:
        with self._counter_lock:
            self.in_flight -= 1
        self._slots.release()

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
        self._batcher.close()

    def __enter__(self) -> QueryServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _DeadlineReader(io.RawIOBase):
    """Socket reads under one deadline per request, however the bytes trickle in.

    The first request's clock starts at accept; a later one's (keep-alive) at its first byte,
    after at most ``limit`` seconds idle. ``received`` counts the request's bytes so far.
    """

    def __init__(self, sock: socket.socket, limit: float):
        self._sock = sock
        self._limit = limit
        self.deadline: float | None = time.monotonic() + limit
        self.received = 0

    def readable(self) -> bool:
        return True

    def next_request(self) -> None:
        self.deadline, self.received = None, 0

    def readinto(self, buffer) -> int:
        if self.deadline is None:
            wait = self._limit
        else:
            wait = self.deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError("request deadline passed")
        self._sock.settimeout(wait)
        n = self._sock.recv_into(buffer)
        if n and self.deadline is None:
            self.deadline = time.monotonic() + self._limit
        self.received += n
        return n


class _Handler(BaseHTTPRequestHandler):
    """One request; the owning :class:`QueryServer` is the class attribute ``app``."""

    app: QueryServer
    server_version = "hwbed-query/1"
    default_request_version = "HTTP/1.0"  # replies always carry a status line (no HTTP/0.9)

    def setup(self) -> None:
        super().setup()
        self._reader = _DeadlineReader(self.connection, self.app.deadline)
        self.rfile = io.BufferedReader(self._reader)
        self._first = True

    def handle_one_request(self) -> None:
        """The stdlib's, with the request deadline: a late request gets 408 and is closed."""
        if not self._first:
            self._reader.next_request()
        self._first = False
        self.command, self.path, self.requestline = "", "", ""  # for send_error before parsing
        self.request_version, self._images = self.default_request_version, 0
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long")
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():  # it has sent its error
                return
        except TimeoutError:
            self.close_connection = True
            if self._reader.received:  # an idle connection is closed silently
                self.send_error(
                    HTTPStatus.REQUEST_TIMEOUT,
                    f"the request did not arrive within {self.app.deadline:g} s",
                )
            return
        method = getattr(self, f"do_{self.command}", None)
        if method is None:
            self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"unsupported method {self.command!r}")
            return
        method()
        self.wfile.flush()

    def do_GET(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def _handle(self, route) -> None:
        start = time.perf_counter()
        self.app.count_request()
        self._unread = 0
        status = HTTPStatus.OK
        slot = False
        try:
            try:
                self._unread = self._content_length()
                self._check_auth()
                slot = self.app.acquire_slot()
                if not slot:
                    self._drain(self.app.max_bytes)  # a body the client may resend
                    self.close_connection = True
                    raise RequestError(
                        HTTPStatus.SERVICE_UNAVAILABLE,
                        f"server busy: {self.app.max_inflight} requests in flight; retry later",
                    )
                route()
            except RequestError as err:
                status = err.status
                self._drain()
                self._send_json(status, {"error": err.message})
            except _ClientGone:
                raise
            except Exception as err:  # the server must outlive any backend failure
                status = HTTPStatus.INTERNAL_SERVER_ERROR
                log.exception("%s %s failed", self.command, self.path)
                self._drain()
                self._send_json(status, {"error": f"internal error: {type(err).__name__}: {err}"})
        except _ClientGone:
            self.close_connection = True
            log.warning(
                "%s %s %s: client went away", self.client_address[0], self.command, self.path
            )
        finally:
            if slot:
                self.app.release_slot()
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
        if self.path != "/v1/info":
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: GET {self.path}")
        self._send_json(HTTPStatus.OK, self.app.info())

    def _post(self) -> None:
        app = self.app
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
        scores, total = app.predict(pixels)
        extra = {"X-Queries": str(total)}
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

    def _read_body(self) -> bytearray:
        """The body, writable (backends may hand it to torch), within the deadline."""
        length, self._unread = self._unread, 0
        body, got = bytearray(length), 0
        view = memoryview(body)
        try:
            while got < length and (n := self.rfile.readinto(view[got:])):
                got += n
        except TimeoutError as err:
            self.close_connection = True
            raise RequestError(
                HTTPStatus.REQUEST_TIMEOUT,
                f"the body did not arrive within {self.app.deadline:g} s",
            ) from err
        except OSError as err:
            raise _ClientGone from err
        if got != length:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"body ended after {got} of {length} bytes")
        return body

    def _drain(self, limit: int = DRAIN_LIMIT) -> None:
        """Read and drop (up to ``limit`` bytes of) an unread body, so closing doesn't reset."""
        if 0 < self._unread <= limit:
            try:
                while self._unread > 0 and (chunk := self.rfile.read(min(self._unread, 1 << 16))):
                    self._unread -= len(chunk)
            except OSError:  # the client went away mid-body, or ran past the deadline
                pass
        if self._unread:
            self.close_connection = True
        self._unread = 0

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """The stdlib's own errors (400, 408, 414, 431, 501, 505) as JSON, closing."""
        text = message or self.responses.get(code, ("error",))[0]
        if explain and message:
            text = f"{text}: {explain}"
        self.close_connection = True
        where = f"{self.command or '-'} {self.path or '-'}"
        log.warning("%s %s %d %s", self.client_address[0], where, code, text)
        try:
            self._send_json(HTTPStatus(code), {"error": text})
        except _ClientGone:  # nothing to tell it
            pass

    def _send_json(self, status: HTTPStatus, doc: dict, extra: dict | None = None) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", extra)

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.connection.settimeout(self.app.deadline)  # sendall: total time for the reply
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="hwbed"')
        if status == HTTPStatus.SERVICE_UNAVAILABLE:
            self.send_header("Retry-After", str(RETRY_AFTER_S))
        if self.close_connection:
            self.send_header("Connection", "close")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        try:
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError as err:
            raise _ClientGone from err

    def log_request(self, code="-", size="-") -> None:
        """Silenced: :meth:`_handle` logs one line per request (without pixels)."""

    def log_message(self, format: str, *args) -> None:
        log.warning("%s %s", self.client_address[0], format % args)


def read_token(path: str | Path) -> str:
    """The token in a token file (surrounding whitespace dropped); a StartupError otherwise."""
    try:
        token = Path(path).read_text().strip()
    except FileNotFoundError as err:
        raise StartupError("missing token file", path) from err
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise StartupError(f"cannot read the token file: {reason}", path) from err
    if not token:
        raise StartupError("empty token file", path)
    if any(ch.isspace() for ch in token):
        raise StartupError("the token file must hold one token without whitespace", path)
    return token


def parse_shape(text: str) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in text.split(","))
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"expected C,H,W, got {text!r}")
    return shape


@contextmanager
def _starting(culprit: str | Path):
    """Turn a graph, file or backend failure into a StartupError naming its culprit."""
    try:
        yield
    except StartupError:
        raise
    except FileNotFoundError as err:  # load_graph: no such path, no graph in the folder
        raise StartupError(err.strerror or "not found", err.filename or culprit) from err
    except OSError as err:
        raise StartupError(f"cannot read: {err.strerror or err}", err.filename or culprit) from err
    except ImportError as err:
        raise StartupError(f"cannot import {err.name or 'a backend module'}", culprit) from err
    except (GraphError, ValueError, RuntimeError) as err:  # BoardError is a RuntimeError
        what = str(err)
        head, sep, tail = what.partition(": ")
        if sep and (head.endswith((".json", ".npz", ".bit", ".py")) or os.path.exists(head)):
            what, culprit = tail, head
        raise StartupError(what, culprit) from err


def _open(args, parser: argparse.ArgumentParser) -> QueryServer:
    """The token, the executable and the bound server the arguments ask for."""
    token = read_token(args.token_file)
    if args.backend == "pynq":
        if not (args.bitfile and args.driver_dir):
            parser.error("--backend pynq needs --bitfile and --driver-dir")
        from hwbed.fpga.deploy.board_backend import open_board

        num_classes, input_shape = args.num_classes, args.input_shape
        if args.graph:
            with _starting(args.graph):
                graph = load_graph(args.graph)
            num_classes = num_classes or graph.tensors[graph.output].shape[-1]
            input_shape = input_shape or graph_input_chw(graph)
        if not num_classes:
            parser.error("--backend pynq needs --graph or --num-classes")
        with _starting(args.bitfile):
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
        with _starting(args.graph):
            exe = graph_executable(args.graph, args.backend)
    address = f"{args.host}:{args.port}"
    try:
        return QueryServer(
            exe,
            token,
            args.host,
            args.port,
            args.max_batch,
            args.max_bytes,
            args.timeout,
            args.deadline,
            args.max_inflight,
        )
    except OSError as err:
        what = "port in use" if err.errno == errno.EADDRINUSE else f"cannot listen: {err}"
        raise StartupError(what, address) from err
    except ValueError as err:
        raise StartupError(str(err), "arguments") from err


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
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per prediction, queue included"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=10.0,
        help="seconds for a request's headers and body to arrive, in total",
    )
    parser.add_argument(
        "--max-inflight", type=int, default=64, help="requests at once; more get 503"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        server = _open(args, parser)
    except StartupError as err:
        parser.exit(2, f"error: {err}\n")
    exe = server.executable
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
