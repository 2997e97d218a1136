"""A busy query server's 503 is retried after its Retry-After; other errors are not."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from hwbed.fpga.deploy.remote import RemoteError, RemoteExecutable

INFO = {
    "name": "stub",
    "input_shape": [1, 2, 2],
    "num_classes": 3,
    "bit_exact": True,
    "max_batch": 8,
    "max_bytes": 1024,
}


def serve(busy: int, status: int = 503):
    """A stub server: ``busy`` predict requests get ``status``, then scores = pixel sums."""
    calls = {"predict": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, code, body, headers=()):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._reply(200, json.dumps(INFO).encode())

        def do_POST(self):
            calls["predict"] += 1
            data = self.rfile.read(int(self.headers["Content-Length"]))
            if calls["predict"] <= busy:
                body = json.dumps({"error": "busy"}).encode()
                self._reply(status, body, [("Retry-After", "0.01")])
                return
            x = np.frombuffer(data, np.uint8).reshape(-1, 4).sum(1, dtype=np.float32)
            scores = np.stack([x, -x, x * 0], 1).astype("<f4")
            self._reply(200, scores.tobytes(), [("X-Shape", f"{len(x)},3")])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, calls


def test_503_is_retried_and_the_answer_counted_once():
    server, calls = serve(busy=2)
    try:
        exe = RemoteExecutable(f"http://127.0.0.1:{server.server_port}", "t", retries=3)
        scores = exe(np.full((2, 1, 2, 2), 3, np.uint8))
        assert scores[:, 0].tolist() == [12.0, 12.0] and calls["predict"] == 3
        assert exe.queries == 2
    finally:
        server.shutdown()


@pytest.mark.parametrize("busy, status, retries", [(9, 503, 2), (1, 500, 5)])
def test_errors_beyond_the_retries_or_not_503_are_raised(busy, status, retries):
    server, calls = serve(busy=busy, status=status)
    try:
        exe = RemoteExecutable(f"http://127.0.0.1:{server.server_port}", "t", retries=retries)
        with pytest.raises(RemoteError, match=f"HTTP {status}: busy"):
            exe(np.zeros((1, 1, 2, 2), np.uint8))
        assert calls["predict"] == (retries + 1 if status == 503 else 1)
        assert exe.queries == 0
    finally:
        server.shutdown()
