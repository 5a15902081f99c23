"""`voice train lm` and `voice eval lm` end to end on a test-sized corpus: train, resume, DDP on gloo, evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voice.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lm") / "corpus"
    assert main(["data", "build", "--small", "--out", str(out), "--no-progress"]) == 0
    assert main(["codec", "tokenize", "--corpus", str(out)]) == 0
    return out


def _history(run: Path) -> list[dict]:
    return json.loads((run / "checkpoint" / "history.json").read_text())


def test_train_resumes_and_evaluates(corpus: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(run)]
    assert main([*args, "--steps", "10"]) == 0
    assert [h["step"] for h in _history(run)] == [10]
    assert main([*args, "--steps", "20"]) == 0                    # resumes at 10, goes on to 20
    history = _history(run)
    assert [h["step"] for h in history] == [10, 20]
    assert {"val_loss", "val_text_acc", "val_audio_acc"} <= set(history[-1])
    capsys.readouterr()
    assert main(["eval", "lm", str(run / "checkpoint"), "--corpus", str(corpus), "--limit", "2",
                 "--hearing-limit", "2", "--speed", "--json", "--worst", str(tmp_path / "worst")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["answers"]["n"] == 2 and report["hearing"]["n"] == 2
    assert {r["sessions"] for r in report["speed"]} == {1, 4}
    assert (tmp_path / "worst" / "worst.json").exists()


def test_a_checkpoint_for_another_codec_is_refused(corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(run), "--steps", "2"]) == 0
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    config["codec_id"] = "some-other-codec-k8"
    (run / "checkpoint" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match="some-other-codec-k8"):
        main(["eval", "lm", str(run / "checkpoint"), "--corpus", str(corpus), "--limit", "1", "--hearing-limit", "0"])


def test_ddp_on_two_cpu_processes(corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "voice.cli", "train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(run),
           "--steps", "6", "--eval-every", "6", "--save-every", "6", "--threads", "1", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [h["step"] for h in _history(run)] == [6]
