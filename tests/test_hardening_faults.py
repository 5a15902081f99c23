"""Faults: corrupt or missing checkpoints fail at start-up; shutdown closes sessions 1001; atomic files."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import FIXED_RULES
from voice import pipelines
from voice.audio import read_wav
from voice.client import VoiceClient
from voice.fileutil import CheckpointError, atomic_write, atomic_write_json, verify_checkpoint
from voice.server.app import ServerConfig, StartupError, VoiceServer
from tests.conftest import ROOT, run


def test_verify_checkpoint(tmp_path):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"weights" * 1000)
    good = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert verify_checkpoint(ckpt, good) == ckpt and verify_checkpoint(ckpt, good.upper()) == ckpt
    with pytest.raises(CheckpointError, match="missing"):
        verify_checkpoint(tmp_path / "nope.pt", good)
    with pytest.raises(CheckpointError, match="not a 64-digit"):
        verify_checkpoint(ckpt, "abc")
    ckpt.write_bytes(b"weights" * 999)                   # truncated download
    with pytest.raises(CheckpointError, match="corrupt") as err:
        verify_checkpoint(ckpt, good)
    assert str(ckpt) in str(err.value)


def test_atomic_write_leaves_old_or_new_never_part(tmp_path, monkeypatch):
    target = tmp_path / "reports" / "r.json"
    atomic_write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("SIGINT in the middle of the write")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, "x" * 100000)
    assert target.read_text() == '{\n  "a": 1\n}\n'          # the old file, whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["r.json"]   # no temporary left


@pytest.fixture
def corrupt_pipeline(tmp_path):
    ckpt = tmp_path / "corrupt.bin"
    ckpt.write_bytes(b"\x00" * 4096)
    card_sha = hashlib.sha256(b"the real weights").hexdigest()

    def warmup(models):
        models.get("test_corrupt", lambda: verify_checkpoint(ckpt, card_sha))

    pipelines.register(pipelines.PipelineDef("test_corrupt", "test only", lambda o, m: [], lambda o, m: 16000,
                                             warmup=warmup))
    yield ckpt
    pipelines._REGISTRY.pop("test_corrupt", None)


def test_corrupt_checkpoint_stops_the_server_at_start_up(corrupt_pipeline):
    async def main():
        srv = VoiceServer(ServerConfig(port=0, vad_defaults=FIXED_RULES, pipelines=("echo", "test_corrupt"), warmup_all=True))
        await srv.start()

    with pytest.raises(StartupError, match="test_corrupt.*corrupt") as err:
        run(main())
    assert str(corrupt_pipeline) in str(err.value)


def test_voice_serve_exits_2_on_a_corrupt_checkpoint(corrupt_pipeline, caplog):
    from voice.cli import main

    t0 = time.monotonic()
    assert main(["serve", "--port", "0", "--pipelines", "echo,test_corrupt"]) == 2
    assert "cannot start" in caplog.text and "sha256" in caplog.text
    assert time.monotonic() - t0 < 30


def test_stop_closes_live_sessions_with_1001_promptly(speech_dir):
    speech, rate = read_wav(speech_dir / "ps_librivox_sense_0890.wav")

    async def main():
        srv = VoiceServer(ServerConfig(port=0, vad_defaults=FIXED_RULES))
        await srv.start()
        c = VoiceClient(srv.url, rate, pipeline="echo")
        await c.connect()
        streaming = asyncio.create_task(c.stream(speech))       # mid-turn when the server stops
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        await srv.stop()
        took = time.monotonic() - t0
        await asyncio.gather(streaming, return_exceptions=True)
        await asyncio.wait_for(c._recv_task, 5)
        return c, took, len(srv.sessions)

    c, took, left = run(main())
    assert c.close_code == 1001 and left == 0 and took < 3.5


def test_sigterm_closes_sessions_1001_and_exits_0(speech_dir):
    """`voice serve` as a real process: SIGTERM mid-turn -> close 1001 to the client, exit status 0."""
    speech, rate = read_wav(speech_dir / "ps_librivox_sense_0890.wav")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("VOICE_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "voice.cli", "serve", "--port", "0", "--pipelines", "echo"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        for line in proc.stdout:                         # start-up log, then "voice server ready at URL"
            m = re.search(r"voice server ready at (\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url, "the server never became ready"

        async def main():
            c = VoiceClient(url, rate, pipeline="echo")
            await c.connect()
            streaming = asyncio.create_task(c.stream(np.concatenate([speech, speech])))
            await asyncio.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(c._recv_task, 10)
            await asyncio.gather(streaming, return_exceptions=True)
            return c

        c = run(main())
        status = proc.wait(timeout=10)
        output = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert c.close_code == 1001, c.close_code
    assert status == 0, output
    assert "shutting down" in output and "Traceback" not in output
