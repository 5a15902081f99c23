"""`voice eval codec --speed-only` needs no data: no corpus, no speech folder (issue 15 item 4)."""

from __future__ import annotations

import json

import pytest

from voice.assets import SPEECH_DIR
from voice.cli import main as cli_main


@pytest.mark.parametrize("speech", ["empty", "missing", ""])
def test_speed_only_runs_without_a_corpus_or_a_speech_folder(tmp_path, capsys, speech):
    (tmp_path / "empty").mkdir()
    speech_arg = str(tmp_path / speech) if speech else ""
    rc = cli_main(["eval", "codec", "--speed-only", "--rtf-seconds", "2", "--corpus", str(tmp_path / "no_corpus"),
                   "--speech", speech_arg])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    line = next(line for line in printed.splitlines() if "RTF" in line)
    assert "1 thread(s)" in line and "1 frame(s)/step" in line and "over 2.0 s" in line
    # it says what it timed: the recordings the package carries
    assert str(SPEECH_DIR) in printed and "WER skipped" in printed


def test_speed_only_json_names_the_timed_audio(tmp_path, capsys):
    rc = cli_main(["eval", "codec", "--speed-only", "--rtf-seconds", "1", "--chunk-frames", "2", "--json",
                   "--corpus", "", "--speech", str(tmp_path / "none")])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    s = report["streaming"]
    assert s["audio_s"] == 1.0 and s["chunk_frames"] == 2 and s["threads"] == 1 and s["rtf"] > 0
    assert s["audio"]["kind"] == "packaged recordings" and s["audio"]["path"] == str(SPEECH_DIR)
    assert s["audio"]["files"] and all((SPEECH_DIR / f).is_file() for f in s["audio"]["files"])
    assert report["intelligibility"] == {}
