"""The deploy package: the graph, a token, and launchers for the query server."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from hwbed.fpga.finn.boards import Board
from hwbed.ir.graph import Graph

SERVE = """#!/usr/bin/env bash
# Serve predictions of this build's bit-exact simulator over HTTP (token in ./token).
here="$(cd "$(dirname "$0")" && pwd)"
exec python -m hwbed.fpga.deploy.server --graph "$here" --port "${PORT:-8088}" \\
  --host "${HOST:-127.0.0.1}" --token-file "$here/token" "$@"
"""

SERVE_BOARD = """#!/usr/bin/env bash
# On the board (PYNQ image with hwbed installed): serve FINN's bitstream through its driver.
here="$(cd "$(dirname "$0")" && pwd)"
finn="$here/../finn/output/deploy"
exec python -m hwbed.fpga.deploy.server --graph "$here" --backend pynq \\
  --bitfile "$finn/bitfile/finn-accel.bit" --driver-dir "$finn/driver" \\
  --port "${PORT:-8088}" --host "${HOST:-0.0.0.0}" --token-file "$here/token" "$@"
"""


def write_deploy_package(build_dir: Path, board: Board) -> Path:
    """Write ``<build_dir>/deploy/`` (graph copy, secret token, launchers, README)."""
    folder = build_dir / "deploy"
    folder.mkdir(parents=True, exist_ok=True)
    graph = Graph.load(build_dir / "graph.json")
    graph.meta.pop("checkpoint", None)  # the package travels alone: the twin stays behind
    graph.save(folder / "graph")
    token = folder / "token"
    if not token.exists():  # created 0600: never readable by others, not even briefly
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    for name, text in (("serve.sh", SERVE), ("serve_board.sh", SERVE_BOARD)):
        (folder / name).write_text(text)
        os.chmod(folder / name, 0o755)
    (folder / "README.md").write_text(f"""# Deploy package ({board.name})

- `serve.sh`: the query server on this machine, with hwbed's bit-exact simulator behind it.
- `serve_board.sh`: the same server on the {board.finn_board}, in front of FINN's bitstream
  and generated PYNQ driver (`../finn/output/deploy/`, produced by the FINN build).
- `token`: the bearer token clients must send (`Authorization: Bearer ...`); keep it secret.

Client: `hwbed.fpga.deploy.remote.RemoteExecutable("http://HOST:8088", token)` is an Executable,
so every attack runs against the server unchanged. Protocol: `docs/deploy.md`.
""")
    return folder
