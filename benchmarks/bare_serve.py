"""Run benchmarks/bare_app.py under uvicorn with N worker processes on the listening socket
`offramp serve --workers` uses (marked TCP, so accepted connections get TCP_NODELAY).

    python benchmarks/bare_serve.py --port PORT --workers N
"""

from __future__ import annotations

import argparse

import uvicorn
from uvicorn.supervisors import Multiprocess

from offramp.serving.workers import listening_socket

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
        Multiprocess(config, sockets=[listening_socket("127.0.0.1", args.port)]).run()
