"""Query server under load: answered, refused (503) and reset requests, latency, images/s.

``python benchmarks/server_load.py [--graph BUILD] [--out benchmarks/results/server_load.json]``

Starts ``python -m hwbed.fpga.deploy.server`` as a subprocess on loopback (default: a
random-init, calibrated tfc-w1a1 on 1x28x28, backend ``auto``, so the server's own overhead
dominates), then for each concurrency (1, 10, 50, 200) runs that many client threads, all
released at once, each sending one-image requests in a row on fresh connections (as
``RemoteExecutable`` does): ``--rounds`` each, more at low concurrency so that every level
sends at least ``--min-requests``. Per level: requests answered 200, refused 503, reset (or
otherwise failed), p50/p99 latency of the 200s, images/s answered, and whether the server's
``queries`` counter grew by exactly the images answered. Each ``--max-inflight`` value
(default 64, the server's default, and 8) gets its own server. ``--baseline FILE`` runs
another server file with the common flags only (e.g. the previous version, for a
before/after). The clients share this process's GIL, so latencies include client overhead;
a shared machine is noisy.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from results import machine, write_results

LEVELS = (1, 10, 50, 200)
TOKEN = "benchmark-token"


def tfc_graph(folder: Path) -> Path:
    """A random-init, calibrated tfc-w1a1 (1x28x28) lowered into ``folder``."""
    import torch

    from hwbed.fpga.lowering.lower import lower
    from hwbed.models.zoo import build_model

    torch.manual_seed(0)
    model = build_model("tfc-w1a1", 1, 28, 28, 10).train()
    with torch.no_grad():
        for _ in range(3):  # Brevitas calibration
            model(torch.rand(16, 1, 28, 28))
    lower(model.eval(), "tfc-w1a1", (1, 28, 28)).save(folder / "graph")
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    args, graph: Path, token_file: Path, max_inflight: int | None
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable]
    cmd += [args.baseline] if args.baseline else ["-m", "hwbed.fpga.deploy.server"]
    cmd += ["--graph", str(graph), "--port", str(port), "--token-file", str(token_file)]
    if max_inflight is not None:
        cmd += ["--max-inflight", str(max_inflight)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            info(port)
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}: {' '.join(cmd)}") from None
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not start within 30 s")


def info(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/v1/info", headers={"Authorization": f"Bearer {TOKEN}"})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def one_request(port: int, body: bytes, shape: str) -> tuple[str, float]:
    """(outcome, seconds): outcome is the status, ``reset`` or ``error``."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            "POST",
            "/v1/predict",
            body,
            {
                "Authorization": f"Bearer {TOKEN}",
                "Content-Type": "application/octet-stream",
                "Accept": "application/octet-stream",
                "X-Shape": shape,
            },
        )
        reply = conn.getresponse()
        reply.read()
        outcome = str(reply.status)
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        outcome = "reset"
    except OSError:
        outcome = "error"
    finally:
        conn.close()
    return outcome, time.perf_counter() - t0


def level(port: int, concurrency: int, rounds: int, image: np.ndarray) -> dict:
    body, shape = image.tobytes(), ",".join(map(str, image.shape))
    results: list[tuple[str, float]] = []
    lock = threading.Lock()
    gate = threading.Barrier(concurrency + 1)

    def client() -> None:
        gate.wait()
        mine = [one_request(port, body, shape) for _ in range(rounds)]
        with lock:
            results.extend(mine)

    before = info(port)["queries"]
    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout=300)
    wall = time.perf_counter() - t0
    after = info(port)["queries"]
    ok = sorted(s for outcome, s in results if outcome == "200")
    count = {k: sum(o == k for o, _ in results) for k in ("200", "503", "reset")}
    return {
        "max_inflight": None,
        "concurrency": concurrency,
        "requests": concurrency * rounds,
        "ok_200": count["200"],
        "busy_503": count["503"],
        "reset": count["reset"],
        "other": concurrency * rounds - sum(count.values()),  # errors, unfinished clients
        "p50_ms": round(1000 * float(np.percentile(ok, 50)), 2) if ok else None,
        "p99_ms": round(1000 * float(np.percentile(ok, 99)), 2) if ok else None,
        "images_per_s": round(count["200"] / wall, 1),
        "wall_s": round(wall, 3),
        "counter_matches": after - before == count["200"] * len(image),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--graph", help="build folder or graph JSON (default: a random tfc)")
    parser.add_argument("--out", default="benchmarks/results/server_load.json")
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    parser.add_argument("--rounds", type=int, default=5, help="requests per client")
    parser.add_argument("--min-requests", type=int, default=100, help="requests per level")
    parser.add_argument("--max-inflight", type=int, nargs="+", default=[64, 8])
    parser.add_argument("--baseline", help="another server .py to run instead (common flags)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        graph = Path(args.graph) if args.graph else tfc_graph(tmp)
        (tmp / "token").write_text(TOKEN)
        for max_inflight in [None] if args.baseline else args.max_inflight:
            proc, port = start_server(args, graph, tmp / "token", max_inflight)
            try:
                served = info(port)
                chw = tuple(served["input_shape"])
                image = np.random.default_rng(0).integers(0, 256, (1, *chw), dtype=np.uint8)
                for concurrency in args.levels:
                    rounds = max(args.rounds, -(-args.min_requests // concurrency))
                    rows.append(level(port, concurrency, rounds, image))
                    rows[-1]["max_inflight"] = max_inflight
                    print(json.dumps(rows[-1]), flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    cols = [c for c in rows[0] if c != "wall_s"]
    print("\n" + " | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    doc = {
        "machine": machine(
            "shared 2-core machine; clients and server on one host; noisy",
            python=platform.python_version(),
        ),
        "server": args.baseline or "hwbed.fpga.deploy.server",
        "executable": served["name"],
        "rounds": args.rounds,
        "min_requests": args.min_requests,
        "units": {"latency": "ms, of the 200 replies", "throughput": "images/s answered"},
        "rows": rows,
    }
    write_results(args.out, doc)


if __name__ == "__main__":
    main()
