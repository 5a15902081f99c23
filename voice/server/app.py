"""The server: WebSocket sessions at /ws, /healthz, and the browser client's files at /."""

from __future__ import annotations

import asyncio
import http
import json
import logging
import mimetypes
import time
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from voice import __version__, pipelines
from voice.protocol import CLOSE_TRY_AGAIN_LATER, PROTOCOL_VERSION, TRANSPORT_MAX_BYTES
from voice.server.session import Session, SessionLimits

log = logging.getLogger(__name__)
CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765                  # 0: pick a free port (tests)
    pipeline: str = "echo"            # default when the hello names none
    client_dir: Path = CLIENT_DIR
    max_sessions: int = 16
    limits: SessionLimits = field(default_factory=SessionLimits)
    warmup: bool = True               # load the default pipeline's shared weights at start-up


class VoiceServer:
    """Owns the shared model cache and the live sessions."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.models = pipelines.ModelCache()
        self.sessions: dict[str, Session] = {}
        self.started_s = time.time()
        self._server: Server | None = None
        defs = pipelines.available()
        if self.config.pipeline not in defs:
            raise ValueError(f"unknown pipeline {self.config.pipeline!r}; available: {', '.join(sorted(defs))}")

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}/ws"

    async def start(self) -> None:
        defn = pipelines.get(self.config.pipeline)
        from voice.stages.silero import shared_model

        await asyncio.to_thread(shared_model)
        if self.config.warmup and defn.warmup is not None:
            await asyncio.to_thread(defn.warmup, self.models)
        self._server = await serve(
            self._handle, self.config.host, self.config.port,
            process_request=self._process_request, compression=None,
            max_size=TRANSPORT_MAX_BYTES, max_queue=32, ping_interval=20, ping_timeout=20,
        )
        log.info("serving on http://%s:%d (WebSocket /ws, pipeline %s)", self.config.host, self.port, self.config.pipeline)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    # ---- HTTP ---------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            if request.headers.get("Upgrade", "").lower() != "websocket":
                return connection.respond(http.HTTPStatus.UPGRADE_REQUIRED, "WebSocket endpoint\n")
            return None
        if path == "/healthz":
            return _response(200, json.dumps(self.health()).encode(), "application/json")
        return self._static(path)

    def health(self) -> dict:
        return {"status": "ok", "version": __version__, "protocol": PROTOCOL_VERSION,
                "pipelines": sorted(pipelines.available()), "default_pipeline": self.config.pipeline,
                "models_loaded": ["silero_vad", *self.models.loaded()], "sessions": len(self.sessions),
                "max_sessions": self.config.max_sessions, "uptime_s": round(time.time() - self.started_s, 1)}

    def _static(self, path: str) -> Response:
        root = self.config.client_dir.resolve()
        rel = "index.html" if path in ("", "/") else path.lstrip("/")
        target = (root / rel).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            return _response(404, b"not found\n", "text/plain")
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".js":
            ctype = "text/javascript"
        return _response(200, target.read_bytes(), ctype)

    # ---- WebSocket ----------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        if len(self.sessions) >= self.config.max_sessions:
            await ws.send(json.dumps({"type": "error", "code": "server_full",
                                      "message": f"the server holds its maximum of {self.config.max_sessions} sessions"}))
            await ws.close(CLOSE_TRY_AGAIN_LATER, "server_full")
            return
        session = Session(ws, self.models, sorted(pipelines.available()), self.config.pipeline, self.config.limits)
        self.sessions[session.session_id] = session
        log.info("session %s opened from %s", session.session_id, ws.remote_address)
        try:
            await session.run()
        finally:
            self.sessions.pop(session.session_id, None)
            log.info("session %s closed", session.session_id)


def _response(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)
