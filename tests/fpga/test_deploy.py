"""The deploy package: query server on loopback, the remote client, the board backend's layout."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import sys
import time
from urllib.parse import urlsplit

import numpy as np
import pytest

from hwbed.fpga.deploy import board_backend, client, server
from hwbed.fpga.deploy.board_backend import BoardError, FinnBoardExecutable
from hwbed.fpga.deploy.remote import RemoteError, RemoteExecutable
from hwbed.fpga.deploy.server import QueryServer
from hwbed.ir.executable import BaseExecutable, Executable, ReferenceExecutable, find_graph
from hwbed.ir.types import GraphError

TOKEN = "s3cret-token-for-tests"
SHAPE = (1, 8, 8)
MAX_BATCH = 8
MAX_BYTES = (MAX_BATCH + 2) * 64  # larger than a full batch, so both limits can be hit


@pytest.fixture(scope="module")
def graph(random_graph):
    return random_graph("tfc-w1a1", SHAPE, batch=16)


@pytest.fixture
def served(graph):
    exe = ReferenceExecutable(graph)
    with QueryServer(exe, TOKEN, port=0, max_batch=MAX_BATCH, max_bytes=MAX_BYTES).start() as srv:
        yield srv, exe


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


def request(url: str, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    """(status, headers, parsed JSON or raw bytes) of one raw HTTP request."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        reply = conn.getresponse()
        data = reply.read()
        if reply.getheader("Content-Type") == "application/json":
            data = json.loads(data)
        return reply.status, reply, data
    finally:
        conn.close()


def predict(url: str, body: bytes, token: str | None = TOKEN, **headers):
    base = {"Content-Type": "application/octet-stream"}
    if token is not None:
        base["Authorization"] = f"Bearer {token}"
    base.update({k.replace("_", "-"): v for k, v in headers.items()})
    return request(url, "POST", "/v1/predict", body, base)


def test_remote_scores_equal_direct_call(served):
    srv, exe = served
    remote = RemoteExecutable(srv.url, TOKEN)
    x = pixels(5)
    expect = exe(x)
    assert np.array_equal(remote(x), expect)
    assert np.array_equal(remote(x / 255.0), expect)  # floats are put on the same grid
    status, _, doc = predict(srv.url, x.tobytes(), X_Batch="5")  # JSON reply
    assert status == 200 and doc["shape"] == [5, 10]
    assert np.array_equal(np.asarray(doc["scores"], dtype=np.float32), expect)


def test_remote_is_an_executable(served):
    srv, exe = served
    remote = RemoteExecutable(srv.url, TOKEN)
    assert isinstance(remote, Executable)
    assert remote.name == f"remote:{exe.name}"
    assert remote.input_shape == SHAPE and remote.num_classes == 10 and remote.bit_exact
    assert RemoteExecutable(srv.url, TOKEN, name="board").name == "board"


def test_large_batches_are_split(served):
    srv, exe = served
    remote = RemoteExecutable(srv.url, TOKEN)
    x = pixels(3 * MAX_BATCH - 1, seed=1)
    before = srv.requests
    assert np.array_equal(remote(x), exe(x))
    assert srv.requests - before == 3


def test_token_is_required(served):
    srv, _ = served
    body = pixels(1).tobytes()
    for token in (None, "wrong", TOKEN[:-1]):
        status, reply, doc = predict(srv.url, body, token=token, X_Batch="1")
        assert status == 401 and "token" in doc["error"]
        assert reply.getheader("WWW-Authenticate", "").startswith("Bearer")
    status, _, _ = predict(srv.url, body, token=None, X_Batch="1", Authorization=f"Basic {TOKEN}")
    assert status == 401
    assert request(srv.url, "GET", "/v1/info")[0] == 401
    with pytest.raises(RemoteError, match="401") as err:
        RemoteExecutable(srv.url, "wrong")
    assert err.value.status == 401


def test_oversized_requests_are_refused(served):
    srv, _ = served
    status, _, doc = predict(srv.url, pixels(MAX_BATCH + 1).tobytes(), X_Batch=str(MAX_BATCH + 1))
    assert status == 413 and "max_batch" in doc["error"]
    status, _, doc = predict(srv.url, bytes(MAX_BYTES + 1), X_Batch="1")
    assert status == 413 and "max_bytes" in doc["error"]


@pytest.mark.parametrize(
    "body, headers, status, message",
    [
        (bytes(63), {"X_Batch": "1"}, 400, "expected 64"),
        (bytes(128), {"X_Batch": "1"}, 400, "expected 64"),
        (bytes(64), {"X_Shape": "1,3,8,8"}, 400, "does not match"),
        (bytes(64), {"X_Shape": "1,8,8"}, 400, "does not match"),
        (bytes(64), {"X_Shape": "one,1,8,8"}, 400, "integers"),
        (bytes(64), {"X_Batch": "0"}, 400, "at least 1"),
        (bytes(64), {}, 400, "X-Batch"),
        (bytes(64), {"X_Batch": "1", "Content_Type": "application/json"}, 415, "octet-stream"),
        (b"\xff\x00garbage", {"X_Batch": "-3"}, 400, "at least 1"),
    ],
    ids=[
        "short",
        "long",
        "wrong-chw",
        "3d-shape",
        "garbage-shape",
        "zero-batch",
        "no-shape",
        "content-type",
        "negative-batch",
    ],
)
def test_malformed_requests_get_400_and_the_server_lives(served, body, headers, status, message):
    srv, exe = served
    got, _, doc = predict(srv.url, body, **headers)
    assert got == status and message in doc["error"]
    assert np.array_equal(RemoteExecutable(srv.url, TOKEN)(pixels(2)), exe(pixels(2)))


def raw_status(url: str, head: str) -> tuple[int, bytes]:
    """Status line and body of a hand-written request (headers http.client would not send)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head.encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    return status, reply.split(b"\r\n\r\n", 1)[1]


def test_bad_content_length(served):
    srv, _ = served
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/octet-stream\r\nX-Batch: 1\r\n"
    )
    status, body = raw_status(srv.url, head + "Content-Length: -64\r\n\r\n")
    assert status == 400 and b"non-negative integer" in body
    status, body = raw_status(srv.url, head + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert status == 411 and b"Content-Length is required" in body


def test_unknown_endpoints(served):
    srv, _ = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert request(srv.url, "GET", "/v1/nope", headers=auth)[0] == 404
    assert request(srv.url, "POST", "/v1/info", b"x", auth)[0] == 404


def test_query_counters_agree(served):
    srv, _ = served
    remote = RemoteExecutable(srv.url, TOKEN)
    remote(pixels(3))
    remote(pixels(2 * MAX_BATCH + 1))
    with pytest.raises(ValueError):
        remote(np.zeros((2, 3, 8, 8), np.uint8))  # refused locally, never sent
    predict(srv.url, bytes(5), X_Batch="1")  # refused by the server, not counted
    info = remote.info()
    assert remote.queries == info["queries"] == srv.queries == 3 + 2 * MAX_BATCH + 1
    assert info["requests"] >= 5


class Broken(BaseExecutable):
    """Fails or stalls on demand, to check that the server survives its backend."""

    def __init__(self, delay: float = 0.0):
        super().__init__("broken", SHAPE, 10)
        self.delay = delay

    def forward(self, pixels):
        if self.delay:
            time.sleep(self.delay)
            return np.zeros((len(pixels), 10), np.float32)
        raise RuntimeError("backend exploded")


def test_backend_failure_and_timeout(caplog):
    with QueryServer(Broken(), TOKEN, port=0).start() as srv:
        with caplog.at_level(logging.ERROR, "hwbed.fpga.deploy"):
            with pytest.raises(RemoteError, match="500.*backend exploded"):
                RemoteExecutable(srv.url, TOKEN)(pixels(1))
    with QueryServer(Broken(delay=0.5), TOKEN, port=0, timeout=0.1).start() as srv:
        remote = RemoteExecutable(srv.url, TOKEN)
        with pytest.raises(RemoteError, match="504.*longer than"):
            remote(pixels(1))
        assert remote.info()["queries"] == remote.queries == 0


def test_requests_are_logged_without_pixels_or_token(served, caplog):
    srv, _ = served
    with caplog.at_level(logging.INFO, "hwbed.fpga.deploy"):
        RemoteExecutable(srv.url, TOKEN)(pixels(3))
        for _ in range(100):  # the server logs once the reply is out: wait for its thread
            lines = [r.getMessage() for r in caplog.records]
            if any("POST /v1/predict 200 n=3" in line for line in lines):
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"no log line for the prediction in {lines}")
    assert not any(TOKEN in line for line in lines)


def test_unreachable_server():
    with QueryServer(Broken(), TOKEN, port=0) as srv:
        url = srv.url  # bound, then closed without serving
    with pytest.raises(RemoteError, match="cannot reach"):
        RemoteExecutable(url, TOKEN, timeout=2)
    with pytest.raises(ValueError, match="URL"):
        RemoteExecutable("file:///etc/passwd", TOKEN)


def test_graph_folder_and_clis(graph, tmp_path, capsys):
    graph.save(tmp_path / "build" / "graph")
    (tmp_path / "build" / "notes.json").write_text("[]")
    exe = server.graph_executable(tmp_path / "build", backend="reference")
    assert isinstance(exe, ReferenceExecutable) and exe.input_shape == SHAPE
    with pytest.raises(FileNotFoundError):
        find_graph(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert server.read_token(token_file) == TOKEN
    token_file.write_text(" \n")
    with pytest.raises(ValueError, match="token"):
        server.read_token(token_file)
    token_file.write_text(TOKEN)

    x = pixels(4, seed=3)
    np.save(tmp_path / "x.npy", x)
    with QueryServer(exe, TOKEN, port=0).start() as srv:
        args = ["--url", srv.url, "--token-file", str(token_file)]
        client.main([*args, "info"])
        assert json.loads(capsys.readouterr().out)["input_shape"] == list(SHAPE)
        client.main([*args, "predict", str(tmp_path / "x.npy"), "--out", str(tmp_path / "s.npy")])
        labels = capsys.readouterr().out.split()
    assert np.array_equal(np.load(tmp_path / "s.npy"), exe(x))
    assert labels == [str(v) for v in exe(x).argmax(axis=1)]


def test_auto_backend_serves_the_simulator(graph, tmp_path):
    from hwbed.sim.executable import SimExecutable

    graph.save(tmp_path / "graph")
    exe = server.graph_executable(tmp_path)
    assert isinstance(exe, SimExecutable) and exe.name.startswith("dsp48-fast:")
    assert np.array_equal(exe(pixels(3)), ReferenceExecutable(graph)(pixels(3)))


def test_truncated_graph_and_bad_token_files_name_their_culprit(graph, tmp_path, capsys):
    graph.save(tmp_path / "build" / "graph")
    text = (tmp_path / "build" / "graph.json").read_text()
    (tmp_path / "build" / "graph.json").write_text(text[:100])
    for where in (tmp_path / "build", tmp_path / "build" / "graph.json"):
        with pytest.raises(GraphError, match="truncated or corrupt graph JSON"):
            find_graph(where)
    with pytest.raises(server.StartupError, match="missing token file") as err:
        server.read_token(tmp_path / "nope")
    assert err.value.culprit == str(tmp_path / "nope")
    url = ["--url", "http://127.0.0.1:9", "--token-file"]
    with pytest.raises(SystemExit) as exit_:
        client.main([*url, str(tmp_path / "nope"), "info"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: missing token file ({tmp_path / 'nope'})\n"
    (tmp_path / "token").write_text(TOKEN)
    with pytest.raises(SystemExit) as exit_:
        client.main([*url, str(tmp_path / "token"), "info"])
    assert exit_.value.code == 1 and "cannot reach" in capsys.readouterr().err


# -- board backend, against a fake FINNExampleOverlay ------------------------------------------


class FakeOverlay:
    """Records what it is given; 'classifies' each frame by its pixel sum modulo 10."""

    def __init__(self, batch_size: int = 1, k: int = 1):
        self.batch_size = batch_size
        self.k = k
        self.seen: list[np.ndarray] = []

    def execute(self, frames: np.ndarray) -> np.ndarray:
        assert len(frames) == self.batch_size and frames.dtype == np.uint8
        self.seen.append(frames.copy())
        top = frames.reshape(len(frames), -1).astype(np.int64).sum(axis=1) % 10
        return np.stack([(top + i) % 10 for i in range(self.k)], axis=1).astype(np.float32)


def io_shapes(ishape, k: int = 1, idt: str = "UINT8") -> dict:
    return {
        "idt": [idt],
        "odt": ["UINT8"],
        "ishape_normal": [ishape],
        "oshape_normal": [(1, k)],
        "num_inputs": 1,
        "num_outputs": 1,
    }


def test_board_layout_cnv_nhwc():
    overlay = FakeOverlay()
    exe = FinnBoardExecutable(overlay, io_shapes((1, 4, 4, 3)), 10, hw_batch=4)
    assert exe.input_shape == (3, 4, 4) and overlay.batch_size == 4
    x = np.random.default_rng(0).integers(0, 256, (6, 3, 4, 4), dtype=np.uint8)
    scores = exe(x)
    assert len(overlay.seen) == 2  # 6 images in fixed batches of 4, the last one padded
    sent = np.concatenate(overlay.seen)[:6]
    assert np.array_equal(sent, x.transpose(0, 2, 3, 1))
    assert not sent[6:].any() and not overlay.seen[1][2:].any()
    top = x.reshape(6, -1).astype(np.int64).sum(axis=1) % 10
    assert np.array_equal(scores, np.eye(10, dtype=np.float32)[top])
    assert exe.queries == 6


def test_board_layout_tfc_flat_and_topk():
    overlay = FakeOverlay(k=3)
    exe = FinnBoardExecutable(overlay, io_shapes((1, 64), k=3), 10, input_shape=SHAPE, hw_batch=2)
    x = pixels(3)
    scores = exe(x)
    assert np.array_equal(np.concatenate(overlay.seen)[:3], x.reshape(3, 64))
    top = x.reshape(3, -1).astype(np.int64).sum(axis=1) % 10
    for row, t in zip(scores, top, strict=True):
        assert row[t] == 3 and row[(t + 1) % 10] == 2 and row[(t + 2) % 10] == 1
        assert row.sum() == 6


def test_board_rejects_what_it_cannot_serve():
    with pytest.raises(BoardError, match="UINT8"):
        FinnBoardExecutable(FakeOverlay(), io_shapes((1, 4, 4, 3), idt="BINARY"), 10)
    with pytest.raises(BoardError, match="not NHWC"):
        FinnBoardExecutable(FakeOverlay(), io_shapes((1, 64)), 10)
    with pytest.raises(BoardError, match="values per frame"):
        FinnBoardExecutable(FakeOverlay(), io_shapes((1, 63)), 10, input_shape=SHAPE)
    exe = FinnBoardExecutable(FakeOverlay(), io_shapes((1, 64)), 5, input_shape=SHAPE)
    with pytest.raises(BoardError, match="outside 0..4"):
        exe(np.full((1, *SHAPE), 7, np.uint8))  # label 64 * 7 % 10 = 8


@pytest.fixture
def driver_dir(tmp_path, monkeypatch):
    """A stand-in for FINN's generated deploy/driver folder (no pynq needed)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "driver_base", raising=False)
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / "driver_base.py").write_text(
        "class FINNExampleOverlay:\n"
        "    def __init__(self, bitfile_name, platform, io_shape_dict, batch_size=1,\n"
        "                 fclk_mhz=100.0, device=None, download=True,\n"
        "                 runtime_weight_dir='runtime_weights/'):\n"
        "        self.bitfile_name, self.batch_size = bitfile_name, batch_size\n"
        "    def execute(self, x):\n"
        "        return [x.reshape(len(x), -1)[:, :1] % 10]\n"
    )
    (driver / "driver.py").write_text(
        "from driver_base import FINNExampleOverlay\n"
        "io_shape_dict = {'idt': ['UINT8'], 'odt': ['UINT8'], 'ishape_normal': [(1, 64)],\n"
        "                 'oshape_normal': [(1, 1)], 'num_inputs': 1, 'num_outputs': 1}\n"
    )
    return driver


def test_open_board_with_a_generated_driver_folder(driver_dir, tmp_path):
    exe = board_backend.open_board(
        tmp_path / "cnv.bit", driver_dir, 10, input_shape=SHAPE, hw_batch=2
    )
    assert exe.name == "pynq:cnv" and exe.overlay.batch_size == 2
    x = pixels(3)
    assert np.array_equal(exe(x).argmax(axis=1), x.reshape(3, -1)[:, 0] % 10)
    with pytest.raises(BoardError, match="no driver.py"):
        board_backend.load_driver(tmp_path)


def test_server_cli_wiring(graph, driver_dir, tmp_path, monkeypatch):
    graph.save(tmp_path / "build" / "graph")
    (tmp_path / "token").write_text(TOKEN)
    started = []
    monkeypatch.setattr(QueryServer, "serve_forever", lambda self: started.append(self))
    common = ["--port", "0", "--token-file", str(tmp_path / "token")]
    server.main(["--graph", str(tmp_path / "build"), "--backend", "reference", *common])
    server.main(
        [
            "--graph",
            str(tmp_path / "build"),
            "--backend",
            "pynq",
            "--bitfile",
            str(tmp_path / "a.bit"),
            "--driver-dir",
            str(driver_dir),
            *common,
        ]
    )
    reference, board = (srv.executable for srv in started)
    assert isinstance(reference, ReferenceExecutable)
    assert isinstance(board, FinnBoardExecutable)
    assert board.input_shape == SHAPE and board.num_classes == 10  # from the graph
    with pytest.raises(SystemExit):
        server.main(["--backend", "pynq", *common])
