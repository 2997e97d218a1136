"""A remote executable: the deploy package's query server (a board, or a simulator) over HTTP.

The protocol is in ``docs/deploy.md``; the server is :mod:`hwbed.fpga.deploy.server`. Only the
standard library is used on the wire: ``urllib`` with a bearer token, uint8 pixels up, raw
little-endian float32 scores down.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from email.message import Message
from urllib.parse import urlsplit

import numpy as np

from hwbed.ir.executable import BaseExecutable

MAX_WAIT_S = 10.0
"""The longest a client waits before retrying a busy server."""


class RemoteError(RuntimeError):
    """The server refused or failed a request (``status`` is None when it was unreachable)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class RemoteExecutable(BaseExecutable):
    """An Executable whose forward pass runs on a query server.

    ``queries`` counts the images the server answered for this client; batches larger than
    the server's ``max_batch`` (or ``max_bytes``) are split into several requests. A busy
    server's 503 is retried up to ``retries`` times after its ``Retry-After`` (a refused
    request is not executed, so a retry never counts twice).

    Example::

        exe = RemoteExecutable("http://pynq:8088", token=open("token").read().strip())
        scores = exe(images)  # uint8 or [0, 1] float images [N, C, H, W]
    """

    def __init__(
        self,
        url: str,
        token: str,
        name: str | None = None,
        timeout: float = 120.0,
        retries: int = 5,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"expected an http(s)://host:port URL, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self._token = token
        info = self.info()
        super().__init__(
            name or f"remote:{info['name']}", tuple(info["input_shape"]), info["num_classes"]
        )
        self.bit_exact = bool(info["bit_exact"])
        self.returns = str(info.get("returns", "scores"))  # servers before protocol field
        self.max_batch = max(
            1, min(int(info["max_batch"]), int(info["max_bytes"]) // math.prod(self.input_shape))
        )

    def info(self) -> dict:
        """The server's ``/v1/info``: name, shapes, limits and its query counter."""
        body, _ = self._request("GET", "/v1/info")
        return json.loads(body)

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        parts, done = [], 0
        try:
            for start in range(0, len(pixels), self.max_batch):
                chunk = np.ascontiguousarray(pixels[start : start + self.max_batch])
                parts.append(self._predict(chunk))
                done += len(chunk)
        except RemoteError:
            self.queries += done  # images the server did answer stay counted
            raise
        return np.concatenate(parts)

    def _predict(self, chunk: np.ndarray) -> np.ndarray:
        body, headers = self._request(
            "POST",
            "/v1/predict",
            chunk.tobytes(),
            {
                "Content-Type": "application/octet-stream",
                "Accept": "application/octet-stream",
                "X-Shape": ",".join(map(str, chunk.shape)),
            },
        )
        expect = (len(chunk), self.num_classes)
        shape = tuple(int(v) for v in headers.get("X-Shape", "").split(",") if v)
        if shape != expect or len(body) != 4 * math.prod(expect):
            raise RemoteError(
                f"{self.url}: reply of shape {shape} and {len(body)} bytes, "
                f"expected float32 {expect}"
            )
        return np.frombuffer(body, dtype="<f4").reshape(expect).astype(np.float32)

    def _request(
        self, method: str, path: str, data: bytes | None = None, headers: dict | None = None
    ) -> tuple[bytes, Message]:
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self._token}", **(headers or {})},
        )
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    return reply.read(), reply.headers
            except urllib.error.HTTPError as err:
                if err.code == 503 and attempt < self.retries:  # busy: wait as it asks, retry
                    time.sleep(_retry_after(err, attempt))
                    continue
                raise RemoteError(
                    f"{self.url}{path}: HTTP {err.code}: {_server_message(err)}", err.code
                ) from err
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", err)
                raise RemoteError(f"{self.url}{path}: cannot reach the server: {reason}") from err
        raise AssertionError("unreachable")


def _retry_after(err: urllib.error.HTTPError, attempt: int) -> float:
    """Seconds to wait before retrying a 503: the server's ``Retry-After``, else backoff."""
    try:
        return min(MAX_WAIT_S, float(err.headers.get("Retry-After", "")))
    except ValueError:
        return min(MAX_WAIT_S, 0.1 * 2**attempt)


def _server_message(err: urllib.error.HTTPError) -> str:
    """The ``error`` field of the server's JSON reply, else the raw text."""
    text = err.read().decode(errors="replace")
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return text.strip() or err.reason
