"""The server: WebSocket sessions at /ws, /healthz, and the browser client's files at /."""

from __future__ import annotations

import asyncio
import http
import json
import logging
import mimetypes
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from voice import __version__, pipelines
from voice.protocol import CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER, PROTOCOL_VERSION, TRANSPORT_MAX_BYTES
from voice.server.limits import CpuLoadMonitor, LoopLagMonitor, SessionLimits, process_tree
from voice.server.security import SecurityConfig, cors_headers, origin_ok, ssl_context, token_ok
from voice.server.session import Close, Session
from voice.stages.vad import VadConfig

log = logging.getLogger(__name__)
CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765                  # 0: pick a free port (tests)
    pipeline: str = "echo"            # default when the hello names none
    client_dir: Path = CLIENT_DIR
    max_sessions: int = 16            # more: error `server_full`, close 1013
    max_loop_lag_ms: float = 500.0    # new sessions get `server_full` (1013) while the loop lags more (0: off)
    limits: SessionLimits = field(default_factory=SessionLimits)
    warmup: bool = True               # load the default pipeline's shared weights at start-up
    pipelines: tuple[str, ...] = ()   # pipelines offered to clients; () = every registered one
    warmup_all: bool = False          # warm every offered pipeline at start-up (what `voice serve` does)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    shutdown_grace_s: float = 3.0     # on stop(): how long sessions get to flush and close (1001) ...
    shutdown_handshake_s: float = 0.2  # ... of which at most this waiting for a client's close reply
    vad_defaults: dict = field(default_factory=dict)  # VAD options a hello does not set (e.g. turn_detection)
    # torch's intra-op threads per call (0: leave torch's setting, one per core). Sessions, the codec, the Whisper
    # ear and the VAD already run beside each other; on 2 cores a second thread per call made the speech LM's first
    # answer frame later, not sooner, so `voice serve` and `voice bench` ask for 1 (docs/e2e.md, "Threads").
    torch_threads: int = 0
    # the VAD's early question (turn_speculate_ms) only while the server keeps at most this share of the cores busy
    # (smoothed over about a second; 1: always): under load, answers started early and taken back cost the others.
    # 0.5 until the speech LM read float16-packed weights (2026-12-07): since then 4 e2e sessions keep about one of
    # 2 cores busy and answer ~100 ms sooner at the median with it (docs/turn-taking.md)
    speculate_early_max_load: float = 0.75
    # the e2e pipeline's speech LM in a process of its own (voice/e2e/speechlm_process.py; `voice serve` and `voice
    # bench` ask for it): its steps no longer share Python's lock with the event loop and the codec's threads
    speechlm_process: bool = False


class StartupError(RuntimeError):
    """The server cannot start: a pipeline failed to warm up (missing or corrupt checkpoint...)."""


class VoiceServer:
    """Owns the shared model cache and the live sessions."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        VadConfig.from_options(self.config.vad_defaults)   # bad server-wide VAD options: ValueError now
        self.models = pipelines.ModelCache({"speechlm_process": self.config.speechlm_process,
                                            "torch_threads": self.config.torch_threads})
        self.sessions: dict[str, Session] = {}
        self.started_s = time.time()
        self._server: Server | None = None
        self._handlers: set[asyncio.Task] = set()
        self.lag = LoopLagMonitor()
        self.cpu = CpuLoadMonitor(others=self.models.process_cpu)
        self._lag_task: asyncio.Task | None = None
        self._cpu_task: asyncio.Task | None = None
        defs = pipelines.available()
        self.pipeline_names = sorted(self.config.pipelines or defs)
        for name in {self.config.pipeline, *self.pipeline_names}:
            if name not in defs:
                raise ValueError(f"unknown pipeline {name!r}; available: {', '.join(sorted(defs))}")
        if self.config.pipeline not in self.pipeline_names:
            raise ValueError(f"the default pipeline {self.config.pipeline!r} is not among the served ones")
        self.config.security.validate(self.config.host)
        sec = self.config.security
        self._ssl = ssl_context(sec.certfile, sec.keyfile) if sec.certfile and sec.keyfile else None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"{'wss' if self._ssl else 'ws'}://{host}:{self.port}/ws"

    async def start(self) -> None:
        """Warm up (raising StartupError with the cause), then listen."""
        from voice.stages.silero import shared_model

        if self.config.torch_threads > 0:       # before any worker thread starts: they take the setting with them
            import torch

            torch.set_num_threads(self.config.torch_threads)
        warm = self.pipeline_names if self.config.warmup_all else [self.config.pipeline]
        for name in warm if self.config.warmup else []:      # what loads beside the warm-ups below
            prestart = pipelines.get(name).prestart
            if prestart is not None:
                await asyncio.to_thread(prestart, self.models)
        await asyncio.to_thread(shared_model)
        for name in warm if self.config.warmup else []:
            defn = pipelines.get(name)
            if defn.warmup is None:
                continue
            try:
                await asyncio.to_thread(defn.warmup, self.models)
            except Exception as exc:
                raise StartupError(f"pipeline {name!r} failed to warm up: {type(exc).__name__}: {exc}") from exc
        self._lag_task = asyncio.create_task(self.lag.run(), name="loop-lag")
        self._cpu_task = asyncio.create_task(self.cpu.run(), name="cpu-load")
        self._server = await serve(
            self._handle, self.config.host, self.config.port, ssl=self._ssl,
            process_request=self._process_request, compression=None, server_header=None,
            max_size=TRANSPORT_MAX_BYTES, max_queue=32, ping_interval=20, ping_timeout=20,
            open_timeout=10, close_timeout=2,
        )
        log.info("serving on %s://%s:%d (WebSocket /ws, pipelines %s, default %s%s)",
                 "https" if self._ssl else "http", self.config.host, self.port, ", ".join(self.pipeline_names),
                 self.config.pipeline, ", token required" if self.config.security.token else "")

    async def stop(self, code: int = CLOSE_GOING_AWAY, reason: str = "server_shutdown") -> None:
        """Stop listening, end every session (flush, close `code`), wait at most `shutdown_grace_s`."""
        if self._server is None:
            return
        self._server.server.close()                       # the listening socket: no new connections
        for session in list(self.sessions.values()):
            session.end(Close(code, reason, handshake_s=self.config.shutdown_handshake_s))
        handlers = [t for t in self._handlers if not t.done()]
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=self.config.shutdown_grace_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        self._server.close(close_connections=True)
        try:
            await asyncio.wait_for(self._server.wait_closed(), self.config.shutdown_grace_s)
        except asyncio.TimeoutError:
            log.warning("some connections did not close in time")
        monitors = [t for t in (self._lag_task, self._cpu_task) if t is not None]
        for task in monitors:
            task.cancel()
        await asyncio.gather(*monitors, return_exceptions=True)
        await asyncio.to_thread(self.models.close)

    async def serve_forever(self) -> None:
        await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    # ---- HTTP ---------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            sec = self.config.security
            if not token_ok(request, sec.token):
                log.warning("refused /ws from %s: missing or wrong token", connection.remote_address)
                return _response(401, b"unauthorized: missing or wrong token\n", "text/plain",
                                 [("WWW-Authenticate", 'Bearer realm="voice"')])
            if not origin_ok(request, sec.allowed_origins, tls=self._ssl is not None):
                log.warning("refused /ws from %s: Origin %r not allowed", connection.remote_address,
                            request.headers.get("Origin"))
                return _response(403, b"forbidden: this Origin may not open sessions\n", "text/plain")
            if request.headers.get("Upgrade", "").lower() != "websocket":
                return connection.respond(http.HTTPStatus.UPGRADE_REQUIRED, "WebSocket endpoint\n")
            return None
        if path == "/healthz":
            sec = self.config.security
            detail = token_ok(request, sec.token)
            return _response(200, json.dumps(self.health(detail)).encode(), "application/json",
                             cors_headers(request, sec.allowed_origins, tls=self._ssl is not None))
        return self._static(path)

    def health(self, detail: bool = True) -> dict:
        """Liveness for anyone; the details (load, models, resources) only for token holders."""
        brief = {"status": "ok", "protocol": PROTOCOL_VERSION}
        if not detail:
            return brief
        return {**brief, "version": __version__, "pipelines": self.pipeline_names,
                "default_pipeline": self.config.pipeline, "models_loaded": ["silero_vad", *self.models.loaded()],
                "sessions": len(self.sessions), "max_sessions": self.config.max_sessions,
                "loop_lag_ms": round(self.lag.lag_ms, 1), "cpu_share": round(self.cpu.share, 3),
                "uptime_s": round(time.time() - self.started_s, 1), **resource_usage()}

    def _spare_cores(self) -> bool:
        """Whether the server has cores to spare for work that may be thrown away (the VAD's early question)."""
        return self.cpu.share <= self.config.speculate_early_max_load

    def _static(self, path: str) -> Response:
        """Files of the browser client only: no traversal, no symlinks out, no dot-files."""
        root = self.config.client_dir.resolve()
        rel = "index.html" if path in ("", "/") else path.lstrip("/")
        try:
            target = (root / rel).resolve()
            ok = (target.is_relative_to(root) and target.is_file()
                  and not any(part.startswith(".") for part in target.relative_to(root).parts))
        except (OSError, ValueError):
            ok = False
        if not ok:
            return _response(404, b"not found\n", "text/plain")
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".js":
            ctype = "text/javascript"
        return _response(200, target.read_bytes(), ctype)

    # ---- WebSocket ----------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        full = len(self.sessions) >= self.config.max_sessions
        overloaded = 0 < self.config.max_loop_lag_ms < self.lag.lag_ms
        if full or overloaded:
            why = (f"the server holds its maximum of {self.config.max_sessions} sessions" if full else
                   f"the server is overloaded (running {self.lag.lag_ms:.0f} ms behind); try again later")
            log.warning("refused a session: %s", why)
            await ws.send(json.dumps({"type": "error", "code": "server_full", "message": why}))
            await ws.close(CLOSE_TRY_AGAIN_LATER, "server_full")
            return
        session = Session(ws, self.models, self.pipeline_names, self.config.pipeline, self.config.limits,
                          vad_defaults=self.config.vad_defaults, spare_cores=self._spare_cores)
        self.sessions[session.session_id] = session
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        log.info("session %s opened from %s", session.session_id, ws.remote_address)
        try:
            await session.run()
        finally:
            self.sessions.pop(session.session_id, None)
            self._handlers.discard(task)
            log.info("session %s closed (%s)", session.session_id, session.close_code)


def resource_usage() -> dict:
    """This process's asyncio tasks and open file descriptors, and the resident memory of it and its children
    (the speech LM's process) (Linux /proc)."""
    out: dict = {"asyncio_tasks": len(asyncio.all_tasks())}
    try:
        out["open_fds"] = len(os.listdir("/proc/self/fd"))
        rss_kb = 0
        for pid in process_tree(os.getpid()):
            with open(f"/proc/{pid}/status") as f:
                rss_kb += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        out["rss_mb"] = round(rss_kb / 1024, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return out


def _response(status: int, body: bytes, content_type: str, extra: list[tuple[str, str]] | None = None) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                       ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY"), *(extra or [])])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)
