"""Handshake checks (token, Origin), TLS contexts and the bind policy of the server."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Request

log = logging.getLogger(__name__)
TOKEN_ENV = "VOICE_TOKEN"
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class SecurityConfig:
    token: str | None = None                  # required at the /ws handshake when set
    allowed_origins: tuple[str, ...] = ()      # browser Origins allowed besides the same origin
    certfile: str | None = None               # TLS: serve wss:// and https://
    keyfile: str | None = None

    def validate(self, host: str) -> None:
        """Raise ValueError for an unsafe or inconsistent configuration."""
        if self.token is not None and len(self.token) < MIN_TOKEN_CHARS:
            raise ValueError(f"the token must have at least {MIN_TOKEN_CHARS} characters "
                             "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)")
        if not is_loopback(host) and not self.token:
            raise ValueError(f"refusing to listen on {host!r} without a token: anyone who can reach it could use "
                             f"the server. Pass --token or set {TOKEN_ENV} (clients then add ?token=... to the "
                             "/ws URL or send 'Authorization: Bearer ...'), or bind to 127.0.0.1")
        if bool(self.certfile) != bool(self.keyfile):
            raise ValueError("TLS needs both --certfile and --keyfile")
        for origin in self.allowed_origins:
            if normalize_origin(origin) is None:
                raise ValueError(f"--allow-origin {origin!r} is not an origin like https://example.com[:port]")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_from_request(request: Request) -> str | None:
    """The token a client presented: `Authorization: Bearer T` or the `token` query parameter."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    values = parse_qs(urlsplit(request.path).query).get("token")
    return values[0] if values else None


def token_ok(request: Request, token: str | None) -> bool:
    """Constant-time check of the presented token (always True when the server has none)."""
    if not token:
        return True
    presented = token_from_request(request)
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "replace"), token.encode("utf-8"))


def normalize_origin(origin: str) -> str | None:
    """'HTTPS://Example.com:443' -> 'https://example.com'; None when it is not a web origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    default = 443 if parts.scheme == "https" else 80
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def origin_ok(request: Request, allowed: tuple[str, ...], tls: bool) -> bool:
    """No Origin (not a browser), the same origin as the Host header, or one of `allowed`.

    Browsers always send Origin on a WebSocket handshake, so this is what stops another web
    site from opening a socket to the server from a visitor's browser (cross-site WebSocket
    hijacking). 'null' origins (sandboxed frames, files) are refused unless listed.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin.strip() == "null":
        return "null" in allowed
    norm = normalize_origin(origin)
    if norm is None:
        return False
    host = request.headers.get("Host", "")
    same = normalize_origin(f"{'https' if tls else 'http'}://{host}")
    if same is not None and norm == same:
        return True
    return norm in {normalize_origin(a) for a in allowed if a != "null"}


def cors_headers(request: Request, allowed: tuple[str, ...], tls: bool) -> list[tuple[str, str]]:
    """Let a page from an allowed Origin read the response (the browser client's /healthz probe).

    Pages from other origins cannot read it, which the client takes for a refused Origin.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return []
    if not origin_ok(request, allowed, tls):
        return [("Vary", "Origin")]
    return [("Access-Control-Allow-Origin", origin.strip()), ("Vary", "Origin")]


def ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+) from PEM files. Raises ValueError with the file named."""
    for name in (certfile, keyfile):
        if not os.path.isfile(name):
            raise ValueError(f"TLS file {name} does not exist")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"cannot load the TLS certificate {certfile} / key {keyfile}: {exc}") from exc
    return ctx


def redact(path: str) -> str:
    """A request path safe for logs (the token query parameter hidden)."""
    if "token=" not in path:
        return path
    base, _, query = path.partition("?")
    parts = ["token=***" if p.startswith("token=") else p for p in query.split("&")]
    return base + "?" + "&".join(parts)
