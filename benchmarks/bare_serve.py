"""Run benchmarks/bare_app.py under uvicorn with N worker processes, the listening socket made as
`offramp serve --workers` makes it (marked TCP, so accepted connections get TCP_NODELAY).

    python benchmarks/bare_serve.py --port PORT --workers N
"""

from __future__ import annotations

import argparse
import socket

import uvicorn
from uvicorn.supervisors import Multiprocess

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    config = uvicorn.Config(
        "bare_app:app", host="127.0.0.1", port=args.port, workers=args.workers, log_level="warning", access_log=False
    )
    if args.workers == 1:
        uvicorn.Server(config).run()
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", args.port))
        sock.set_inheritable(True)
        Multiprocess(config, sockets=[sock]).run()
