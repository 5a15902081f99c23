"""`voice serve`: run the WebSocket server."""

from __future__ import annotations

import argparse
import asyncio
import logging

log = logging.getLogger(__name__)


def register(subparsers, registered: dict) -> None:
    p = subparsers.add_parser("serve", help="serve the assistant over WebSocket (and the browser client)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--pipeline", default="echo", help="default pipeline when a client names none")
    p.add_argument("--max-sessions", type=int, default=16)
    p.add_argument("--no-warmup", action="store_true", help="load models on first use instead of at start-up")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voice.server.app import ServerConfig, VoiceServer

    config = ServerConfig(host=args.host, port=args.port, pipeline=args.pipeline,
                          max_sessions=args.max_sessions, warmup=not args.no_warmup)
    try:
        server = VoiceServer(config)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    try:
        asyncio.run(server.serve_forever())
    except KeyboardInterrupt:
        pass
    return 0
