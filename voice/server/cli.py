"""`voice serve`: run the WebSocket server (secure defaults, graceful shutdown on SIGTERM/SIGINT)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal

log = logging.getLogger(__name__)


def register(subparsers, registered: dict) -> None:
    p = subparsers.add_parser("serve", help="serve the assistant over WebSocket (and the browser client)",
                              description="Serve the assistant. See docs/security.md before exposing it.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: loopback only; any other address needs a token)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--pipeline", default="echo", help="default pipeline when a client names none")
    p.add_argument("--pipelines", default="",
                   help="comma-separated pipelines to offer (default: all registered); all are warmed up")
    p.add_argument("--max-sessions", type=int, default=16, help="more sessions get close 1013 (server_full)")
    p.add_argument("--max-loop-lag-ms", type=float, default=500.0,
                   help="refuse new sessions (1013) while the server runs this far behind (0: never)")
    p.add_argument("--max-session-minutes", type=float, default=240.0, help="longer sessions are closed (1008)")
    p.add_argument("--token", default=None,
                   help="shared secret clients present as ?token=... or 'Authorization: Bearer'; "
                        "prefer the VOICE_TOKEN environment variable (arguments show in `ps`)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="a browser Origin allowed besides the server's own, e.g. https://app.example.com "
                        "(repeatable)")
    p.add_argument("--certfile", default=None, help="TLS certificate (PEM): serve https/wss")
    p.add_argument("--keyfile", default=None, help="TLS private key (PEM)")
    p.add_argument("--no-warmup", action="store_true", help="load models on first use instead of at start-up")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch's threads per model call (0: one per core); 1 answers sooner on 2 cores (docs/e2e.md)")
    p.add_argument("--speechlm-in-process", action="store_true",
                   help="run the e2e pipeline's speech LM on a thread of the server's process instead of a process "
                        "of its own (the default since 2026-12-07: docs/e2e.md, \"The speech LM's own process\")")
    p.add_argument("--turn-detection", choices=("model", "silence"), default=None,
                   help="how turns end when a hello does not say: the end-of-turn model (default) or end_silence_ms")
    p.add_argument("--barge-in-detection", choices=("model", "duration"), default=None,
                   help="how speech interrupts an answer when a hello does not say: the barge-in model (default) "
                        "or barge_in_min_speech_ms")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """ServerConfig from the arguments (and VOICE_TOKEN). Raises ValueError for unsafe settings."""
    from voice.server.app import ServerConfig
    from voice.server.limits import SessionLimits
    from voice.server.security import TOKEN_ENV, SecurityConfig

    token = args.token or os.environ.get(TOKEN_ENV) or None
    security = SecurityConfig(token=token, allowed_origins=tuple(args.allow_origin),
                              certfile=args.certfile, keyfile=args.keyfile)
    served = tuple(p.strip() for p in args.pipelines.split(",") if p.strip())
    limits = SessionLimits(max_session_s=args.max_session_minutes * 60.0)
    vad_defaults = {k: v for k, v in (("turn_detection", getattr(args, "turn_detection", None)),
                                      ("barge_in_detection", getattr(args, "barge_in_detection", None))) if v}
    return ServerConfig(host=args.host, port=args.port, pipeline=args.pipeline, pipelines=served,
                        max_sessions=args.max_sessions, max_loop_lag_ms=args.max_loop_lag_ms, warmup=not args.no_warmup, warmup_all=True,
                        limits=limits, security=security, vad_defaults=vad_defaults,
                        torch_threads=max(0, getattr(args, "torch_threads", 1)),
                        speechlm_process=not getattr(args, "speechlm_in_process", False))


def run(args: argparse.Namespace) -> int:
    from voice.server.app import StartupError, VoiceServer
    from voice.server.security import is_loopback

    try:
        config = build_config(args)
        server = VoiceServer(config)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if not is_loopback(config.host) and not config.security.certfile:
        log.warning("serving on %s without TLS: browsers only open the microphone on https (or localhost), "
                    "and the token travels in clear; pass --certfile/--keyfile", config.host)
    try:
        return asyncio.run(_serve(server))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 2
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        return 2


async def _serve(server) -> int:
    """Serve until SIGTERM or SIGINT, then close every session with 1001 and return 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    # The models and modules loaded so far live as long as the process: keep the collector off
    # them (shorter pauses while serving, and an exit in a fraction of the time).
    gc.freeze()
    print(f"voice server ready at {server.url}", flush=True)
    await stop.wait()
    log.info("shutting down: closing %d session(s)", len(server.sessions))
    await server.stop()
    log.info("stopped")
    return 0
