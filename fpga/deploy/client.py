"""Command-line client of the query server, for smoke tests of a deployed board.

``python -m hwbed.fpga.deploy.client --url http://pynq:8088 --token-file F info`` prints the
server's ``/v1/info``; ``... predict images.npy [--out scores.npy]`` sends a saved batch
[N, C, H, W] (uint8, or float in [0, 1]) and prints the top-1 label of each image. A bad
token file is one ``error:`` line and exit 2, a refused or failed request exit 1. The library
client is :class:`hwbed.fpga.deploy.remote.RemoteExecutable`.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from hwbed.fpga.deploy.remote import RemoteError, RemoteExecutable
from hwbed.fpga.deploy.server import StartupError, read_token


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hwbed.fpga.deploy.client", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--url", required=True, help="http://host:port of the query server")
    parser.add_argument("--token-file", required=True, help="file holding the bearer token")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the server's /v1/info")
    predict = sub.add_parser("predict", help="score a .npy batch [N, C, H, W]")
    predict.add_argument("images", help=".npy file of uint8 or [0, 1] float images")
    predict.add_argument("--out", help="write the float32 scores [N, classes] to this .npy")
    args = parser.parse_args(argv)

    try:
        exe = RemoteExecutable(args.url, read_token(args.token_file), timeout=args.timeout)
        if args.command == "info":
            print(json.dumps(exe.info(), indent=1))
            return
        scores = exe(np.load(args.images, allow_pickle=False))
    except StartupError as err:
        parser.exit(2, f"error: {err}\n")
    except RemoteError as err:
        parser.exit(1, f"error: {err}\n")
    if args.out:
        np.save(args.out, scores)
    print(" ".join(map(str, scores.argmax(axis=1))))


if __name__ == "__main__":
    main()
