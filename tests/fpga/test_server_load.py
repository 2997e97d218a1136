"""The query server under load and abuse: concurrency, 503s, deadlines, JSON errors, start-up."""

from __future__ import annotations

import http.client
import json
import select
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from hwbed.fpga.deploy.remote import RemoteExecutable
from hwbed.fpga.deploy.server import QueryServer
from hwbed.ir.executable import BaseExecutable, ReferenceExecutable

TOKEN = "load-test-token"
SHAPE = (1, 8, 8)
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


@pytest.fixture(scope="module")
def graph(random_graph):
    return random_graph("tfc-w1a1", SHAPE, batch=16)


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


def post(port: int, x: np.ndarray, timeout: float = 20) -> tuple[int | str, dict, bytes]:
    """(status or 'reset', headers, body) of one binary predict request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/v1/predict",
            x.tobytes(),
            {
                "Authorization": f"Bearer {TOKEN}",
                "Content-Type": "application/octet-stream",
                "Accept": "application/octet-stream",
                "X-Shape": ",".join(map(str, x.shape)),
            },
        )
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        return "reset", {}, b""
    finally:
        conn.close()


def raw(port: int, data: bytes, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Status, headers and body of hand-written request bytes (read until the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ", 2)[1]), headers, body


def assert_json_error(headers: dict, body: bytes) -> str:
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    message = json.loads(body)["error"]
    assert isinstance(message, str) and message
    return message


class Gated(BaseExecutable):
    """Holds every call until ``gate`` opens; records batch sizes; row scores = pixel sums.

    An image of 255s only makes the whole call fail.
    """

    def __init__(self):
        super().__init__("gated", SHAPE, 10)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[int] = []

    def forward(self, x):
        self.entered.set()
        assert self.gate.wait(20)
        self.batches.append(len(x))
        if (x.reshape(len(x), -1) == 255).all(axis=1).any():
            raise RuntimeError("poisoned image")
        sums = x.reshape(len(x), -1).astype(np.float32).sum(axis=1, keepdims=True)
        return np.repeat(sums, 10, axis=1)


def wait_for(condition, seconds: float = 10) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def spawn(fn, *args) -> tuple[threading.Thread, dict]:
    """``fn(*args)`` on a daemon thread; its result lands in the dict under ``"result"``."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=fn(*args)), daemon=True)
    thread.start()
    return thread, box


class Slow(ReferenceExecutable):
    """The reference executor, 20 ms slower per call: requests pile up."""

    def forward(self, x):
        time.sleep(0.02)
        return super().forward(x)


def test_200_concurrent_clients_are_answered_never_reset(graph):
    exe = Slow(graph)
    x = pixels(200, seed=1)
    expect = exe(x)
    with QueryServer(exe, TOKEN, port=0, max_inflight=16).start() as srv:
        port = srv.httpd.server_address[1]
        gate = threading.Barrier(200)

        def client(i):
            gate.wait(timeout=20)
            return post(port, x[i : i + 1])

        jobs = [spawn(client, i) for i in range(200)]
        end = time.monotonic() + 30
        for t, _ in jobs:
            t.join(timeout=max(0.0, end - time.monotonic()))
        replies = [box["result"] for _, box in jobs]  # a KeyError: a client still waiting
        statuses = [status for status, _, _ in replies]
        assert set(statuses) <= {200, 503}, statuses
        ok = [i for i, status in enumerate(statuses) if status == 200]
        assert ok
        for i in ok:  # merged batches keep every client's rows
            scores = np.frombuffer(replies[i][2], "<f4").reshape(1, 10)
            assert np.array_equal(scores, expect[i : i + 1])
        for status, headers, body in replies:
            if status == 503:
                assert headers["Retry-After"] == "1" and "busy" in assert_json_error(headers, body)
        assert srv.queries == len(ok)
        wait_for(lambda: srv.in_flight == 0)  # a slot is freed just after its reply
        assert srv.rejected == 200 - len(ok)
        assert srv._batcher.calls <= len(ok)


def test_requests_beyond_max_inflight_get_503_and_the_server_recovers():
    exe = Gated()
    with QueryServer(exe, TOKEN, port=0, max_inflight=2).start() as srv:
        port = srv.httpd.server_address[1]
        held = [spawn(post, port, pixels(1, i)) for i in range(2)]
        wait_for(lambda: srv.in_flight == 2 and exe.entered.is_set())
        status, headers, body = post(port, pixels(1, 2))
        assert status == 503 and headers["Retry-After"] == "1"
        assert "2 requests in flight" in assert_json_error(headers, body)
        exe.gate.set()
        for t, box in held:
            t.join(timeout=20)
            assert box["result"][0] == 200
        assert post(port, pixels(1, 3))[0] == 200
        assert srv.queries == 3 and srv.rejected == 1
        wait_for(lambda: srv.in_flight == 0)


def test_queued_requests_run_as_one_batch_and_failures_stay_their_own():
    exe = Gated()
    x = pixels(4, seed=5)
    x[2] = 255  # poisons any batch it is in
    with QueryServer(exe, TOKEN, port=0).start() as srv:
        port = srv.httpd.server_address[1]
        jobs = [spawn(post, port, x[:1])]
        wait_for(exe.entered.is_set)  # the worker is busy: the next three queue up
        jobs += [spawn(post, port, x[i : i + 1]) for i in (1, 2, 3)]
        wait_for(lambda: srv._batcher._queue.qsize() == 3)
        exe.gate.set()
        for t, _ in jobs:
            t.join(timeout=20)
    replies = [box["result"] for _, box in jobs]
    # one call for the first, one merged call of 3 (it fails), then the 3 one by one
    assert exe.batches == [1, 3, 1, 1, 1]
    assert replies[2][0] == 500 and "poisoned" in assert_json_error(*replies[2][1:])
    for i in (0, 1, 3):
        status, _, body = replies[i]
        assert status == 200
        assert np.frombuffer(body, "<f4")[0] == x[i].astype(np.float32).sum()
    assert srv.queries == 3 and srv._batcher.calls == 5


@pytest.mark.parametrize("stage", ["headers", "body"])
def test_slow_loris_is_cut_off_by_the_total_deadline(graph, stage):
    exe = ReferenceExecutable(graph)
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: x\r\n{AUTH}"
        "Content-Type: application/octet-stream\r\nX-Batch: 1\r\nContent-Length: 64\r\n\r\n"
    ).encode()
    sent, trickle = (b"", head) if stage == "headers" else (head, bytes(64))
    with QueryServer(exe, TOKEN, port=0, deadline=1.0).start() as srv:
        port = srv.httpd.server_address[1]
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(sent)
            for i in range(len(trickle)):  # one byte every 0.1 s: 64+ s if never cut off
                sock.sendall(trickle[i : i + 1])
                if select.select([sock], [], [], 0.1)[0]:
                    break
                if i == 5:  # meanwhile, other clients are served
                    remote = RemoteExecutable(srv.url, TOKEN)
                    assert np.array_equal(remote(pixels(1)), exe(pixels(1)))
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        elapsed = time.monotonic() - start
    assert 0.9 < elapsed < 3.0
    head_text, _, body = reply.partition(b"\r\n\r\n")
    assert head_text.startswith(b"HTTP/1.0 408")
    assert b"within 1 s" in body and json.loads(body)["error"]


def test_an_idle_connection_is_closed_without_a_reply(graph):
    with QueryServer(ReferenceExecutable(graph), TOKEN, port=0, deadline=0.5).start() as srv:
        with socket.create_connection(srv.httpd.server_address[:2], timeout=10) as sock:
            start = time.monotonic()
            assert sock.recv(1024) == b""
            assert time.monotonic() - start < 2.5


BAD_REQUESTS = {
    "400-syntax": (b"GARBAGE\r\n\r\n", 400, "Bad request syntax"),
    "400-version": (b"GET /v1/info HTTP/x.y\r\n\r\n", 400, "Bad request version"),
    "505-version": (b"GET /v1/info HTTP/2.0\r\n\r\n", 505, "Invalid HTTP version"),
    "414-line": (b"GET /" + b"a" * (65537 - 5), 414, "request line too long"),
    "431-long-header": (
        b"GET /v1/info HTTP/1.1\r\nX-Long: " + b"a" * (65537 - 8),
        431,
        "Line too long",
    ),
    "431-many-headers": (
        b"GET /v1/info HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)),
        431,
        "Too many headers",
    ),
    "501-method": (b"PUT /v1/predict HTTP/1.1\r\nHost: x\r\n\r\n", 501, "unsupported method"),
    "401-token": (b"GET /v1/info HTTP/1.1\r\nHost: x\r\n\r\n", 401, "token"),
    "404-path": (f"GET /v2 HTTP/1.1\r\n{AUTH}\r\n".encode(), 404, "no such endpoint"),
    "411-length": (
        f"POST /v1/predict HTTP/1.1\r\n{AUTH}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode(),
        411,
        "Content-Length",
    ),
    "413-bytes": (
        f"POST /v1/predict HTTP/1.1\r\n{AUTH}Content-Length: 999999999\r\n\r\n".encode(),
        413,
        "max_bytes",
    ),
    "415-type": (
        f"POST /v1/predict HTTP/1.1\r\n{AUTH}X-Batch: 1\r\nContent-Length: 64\r\n\r\n".encode()
        + bytes(64),
        415,
        "octet-stream",
    ),
    "400-body": (
        f"POST /v1/predict HTTP/1.1\r\n{AUTH}Content-Type: application/octet-stream\r\n"
        "X-Batch: 1\r\nContent-Length: 3\r\n\r\nabc".encode(),
        400,
        "expected 64",
    ),
}


def test_every_error_status_has_a_json_body(graph):
    with QueryServer(ReferenceExecutable(graph), TOKEN, port=0).start() as srv:
        port = srv.httpd.server_address[1]
        for name, (data, status, message) in BAD_REQUESTS.items():
            got, headers, body = raw(port, data)
            assert got == status, name
            assert message in assert_json_error(headers, body), name
        # 500 and 504, from the backend
        exe = Gated()
        exe.gate.set()
        x = np.full((1, *SHAPE), 255, np.uint8)
        with QueryServer(exe, TOKEN, port=0, timeout=0.2).start() as failing:
            status, headers, body = post(failing.httpd.server_address[1], x)
            assert status == 500 and "poisoned" in assert_json_error(headers, body)
            exe.gate.clear()
            status, headers, body = post(failing.httpd.server_address[1], np.zeros_like(x))
            assert status == 504 and "longer than" in assert_json_error(headers, body)
            exe.gate.set()
        # the server lives on
        assert RemoteExecutable(srv.url, TOKEN).info()["queries"] == 0


@pytest.fixture(scope="module")
def files(graph, tmp_path_factory):
    root = tmp_path_factory.mktemp("startup")
    graph.save(root / "build" / "graph")
    (root / "token").write_text(TOKEN + "\n")
    (root / "empty").write_text("\n")
    (root / "truncated").mkdir()
    text = (root / "build" / "graph.json").read_text()
    (root / "truncated" / "graph.json").write_text(text[: len(text) // 2])
    (root / "truncated" / "graph.npz").write_bytes((root / "build" / "graph.npz").read_bytes())
    return root


@pytest.mark.parametrize(
    "case, message",
    [
        ("token-missing", "error: missing token file ({root}/nope)"),
        ("token-empty", "error: empty token file ({root}/empty)"),
        ("graph-missing", "error: no such graph or build folder ({root}/nope)"),
        ("graph-truncated", "error: truncated or corrupt graph JSON: "),
        ("graph-truncated-file", "error: truncated or corrupt graph JSON: "),
        ("port-in-use", "error: port in use (127.0.0.1:{port})"),
    ],
)
def test_startup_errors_are_one_line_and_exit_2(files, case, message):
    args = {"graph": files / "build", "token-file": files / "token", "port": 0}
    if case == "token-missing":
        args["token-file"] = files / "nope"
    elif case == "token-empty":
        args["token-file"] = files / "empty"
    elif case == "graph-missing":
        args["graph"] = files / "nope"
    elif case == "graph-truncated":
        args["graph"] = files / "truncated"
    elif case == "graph-truncated-file":
        args["graph"] = files / "truncated" / "graph.json"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if case == "port-in-use":
            args["port"] = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "hwbed.fpga.deploy.server", "--backend", "reference"]
        cmd += [f"--{k}={v}" for k, v in args.items()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(message.format(root=files, port=args["port"]))
    if case.startswith("graph-truncated"):
        assert lines[0].endswith(f"({files}/truncated/graph.json)")
