"""Secure defaults: loopback bind, token at the handshake, Origin allowlist, TLS, /healthz and static files."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from voice.client import VoiceClient
from voice.server.app import ServerConfig, VoiceServer
from voice.server.limits import SessionLimits, TokenBucket
from voice.server.security import SecurityConfig, is_loopback, normalize_origin, redact
from tests.conftest import run, serve

TOKEN = "s3cret-token-for-tests-0123456789"
HELLO = json.dumps({"type": "hello", "version": 1, "sample_rate": 16000, "pipeline": "echo"})


async def handshake(url: str, headers: dict | None = None, ssl_ctx=None) -> int | dict:
    """Open /ws with `headers`; the HTTP status if refused, else the first event after our hello."""
    try:
        async with connect(url, additional_headers=headers or {}, ssl=ssl_ctx, open_timeout=10) as ws:
            await ws.send(HELLO)
            return json.loads(await asyncio.wait_for(ws.recv(), 10))
    except InvalidStatus as exc:
        return exc.response.status_code


def http_get(url: str, context=None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_non_loopback_bind_needs_a_token():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")
    with pytest.raises(ValueError, match="without a token"):
        VoiceServer(ServerConfig(host="0.0.0.0", port=0))
    with pytest.raises(ValueError, match="at least 16"):
        VoiceServer(ServerConfig(port=0, security=SecurityConfig(token="short")))
    VoiceServer(ServerConfig(host="0.0.0.0", port=0, security=SecurityConfig(token=TOKEN)))   # accepted


def test_cli_refuses_a_public_bind_without_token(monkeypatch, caplog):
    from voice.cli import main

    monkeypatch.delenv("VOICE_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "without a token" in caplog.text


def test_token_is_checked_at_the_handshake():
    async def main(srv):
        base = srv.url
        return (await handshake(base), await handshake(base + "?token=wrong-token-wrong-token"),
                await handshake(base + "?token=" + TOKEN),
                await handshake(base, {"Authorization": f"Bearer {TOKEN}"}),
                await handshake(base, {"Authorization": "Bearer nope"}),
                await asyncio.to_thread(http_get, f"http://127.0.0.1:{srv.port}/healthz"),
                await asyncio.to_thread(http_get, f"http://127.0.0.1:{srv.port}/healthz?token={TOKEN}"))

    none, wrong, query, bearer, bad_bearer, health_anon, health_auth = serve(
        main, security=SecurityConfig(token=TOKEN))
    assert none == 401 and wrong == 401 and bad_bearer == 401
    assert query["type"] == "ready" and bearer["type"] == "ready"
    # /healthz: liveness for anyone, details only with the token; never the token itself
    assert health_anon[0] == 200 and json.loads(health_anon[1]) == {"status": "ok", "protocol": 1}
    detail = json.loads(health_auth[1])
    assert "sessions" in detail and "pipelines" in detail and TOKEN not in health_auth[1].decode()


def test_voice_client_connects_with_the_token_in_the_url():
    async def main(srv):
        c = VoiceClient(srv.url + "?token=" + TOKEN, 16000, pipeline="echo")
        ready = await c.connect()
        await c.close()
        return ready

    assert serve(main, security=SecurityConfig(token=TOKEN))["type"] == "ready"


def test_origin_allowlist_blocks_cross_site_websockets():
    async def main(srv):
        host = f"127.0.0.1:{srv.port}"
        return [await handshake(srv.url, h) for h in (
            {}, {"Origin": f"http://{host}"}, {"Origin": "https://evil.example"},
            {"Origin": "https://app.example.com"}, {"Origin": "HTTPS://APP.example.com:443"},
            {"Origin": "null"}, {"Origin": "http://127.0.0.1:1"})]

    results = serve(main, security=SecurityConfig(allowed_origins=("https://app.example.com",)))
    no_origin, same, evil, listed, listed_caps, null, other_port = results
    for ok in (no_origin, same, listed, listed_caps):
        assert isinstance(ok, dict) and ok["type"] == "ready"
    assert evil == 403 and null == 403 and other_port == 403
    assert normalize_origin("https://a.b:443/") == "https://a.b" and normalize_origin("ftp://a") is None


def _self_signed(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_serves_wss_and_https(tmp_path):
    cert, key = _self_signed(tmp_path)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def main(srv):
        plain = srv.url.replace("wss://", "ws://")
        try:
            async with connect(plain, open_timeout=5) as ws:
                await ws.recv()
            plain_result = "opened"
        except Exception as exc:
            plain_result = type(exc).__name__
        https = await asyncio.to_thread(http_get, f"https://127.0.0.1:{srv.port}/healthz", client_ctx)
        return srv.url, await handshake(srv.url, ssl_ctx=client_ctx), plain_result, https

    url, ready, plain_result, https = serve(
        main, security=SecurityConfig(certfile=str(cert), keyfile=str(key)))
    assert url.startswith("wss://") and ready["type"] == "ready"
    assert plain_result != "opened"
    assert https[0] == 200 and json.loads(https[1])["status"] == "ok"
    with pytest.raises(ValueError, match="both"):
        VoiceServer(ServerConfig(port=0, security=SecurityConfig(certfile=str(cert))))
    with pytest.raises(ValueError, match="does not exist"):
        VoiceServer(ServerConfig(port=0, security=SecurityConfig(certfile="/nope.pem", keyfile="/nope.key")))


def test_static_files_cannot_escape_the_client_dir(tmp_path):
    client = tmp_path / "client"
    client.mkdir()
    (client / "index.html").write_text("<h1>voice</h1>")
    (client / ".env").write_text("SECRET=1")
    (tmp_path / "secret.txt").write_text("top secret")
    (client / "link.txt").symlink_to(tmp_path / "secret.txt")

    async def main(srv):
        base = f"http://127.0.0.1:{srv.port}"
        paths = ["/", "/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "//etc/passwd",
                 "/link.txt", "/.env", "/index.html/..", "/" + "a/" * 200 + "x"]
        return {p: await asyncio.to_thread(http_get, base + p) for p in paths}

    got = serve(main, client_dir=client)
    assert got["/"] == (200, b"<h1>voice</h1>")
    for path, (status, body) in got.items():
        assert b"secret" not in body.lower() and b"root:" not in body, path
        if path != "/":
            assert status in (400, 404), (path, status)


def test_full_server_closes_1013_and_idle_connections_time_out():
    async def main(srv):
        first = VoiceClient(srv.url, 16000, pipeline="echo")
        await first.connect()
        try:
            async with connect(srv.url) as ws:
                full = json.loads(await asyncio.wait_for(ws.recv(), 5))
                await asyncio.wait_for(ws.wait_closed(), 5)
                full_close = ws.close_code
        finally:
            await first.close()
        for _ in range(100):                     # the server forgets the session just after the close
            if not srv.sessions:
                break
            await asyncio.sleep(0.02)
        async with connect(srv.url) as ws:       # connects and never says hello
            idle = json.loads(await asyncio.wait_for(ws.recv(), 5))
            await asyncio.wait_for(ws.wait_closed(), 5)
            return full, full_close, idle, ws.close_code

    full, full_close, idle, idle_close = serve(main, max_sessions=1, limits=SessionLimits(hello_timeout_s=0.5))
    assert full["code"] == "server_full" and full_close == 1013
    assert idle["code"] == "hello_timeout" and idle_close == 1008


def test_token_bucket_and_log_redaction():
    t = [0.0]
    bucket = TokenBucket(rate_per_s=2, burst=3, clock=lambda: t[0])
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]
    t[0] = 0.5
    assert bucket.allow() and not bucket.allow()
    assert redact("/ws?token=abc&x=1") == "/ws?token=***&x=1" and redact("/ws") == "/ws"
    with pytest.raises(ValueError):
        SessionLimits(send_timeout_s=0)
