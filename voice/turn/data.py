"""The paused-turn set (`voice data turns`): the corpus's user questions said whole, cut at a pause, and finished.

For every user utterance of a corpus (same text, voice, speed and pitch, same split) this
synthesises three pieces, each trimmed of the synthesizer's own leading and trailing silence:

- `full`: the question said in one go (the turn is over after it);
- `prefix`: what comes before a pause inside the question (`voice.turn.pauses`), written with a
  trailing comma for the "more is coming" tune most of the time, sometimes with a filler;
- `rest`: what comes after the pause.

A sixth of the utterances also get an `opening` piece, a hesitation said before any words
("So, um,"). The end-of-turn model trains on pieces followed by silence (full: over; prefix:
not over; prefix + pause + rest: over), and the bench plays prefix + pause + rest, with the pause
length stored here, to count answers that start while the user is only pausing.

The test split keeps the corpus's held-out voices and phrasings. With `extra_voices`
(`--extra-voices`), every train utterance is also said by one of those voices
(`voice.data.voices.EXTRA_VOICES`: never in the corpus, none near a test voice), taken in turn, so
the models hear more speakers; validation and test are unchanged. Shards make the build resumable:
a finished shard is never redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voice.fileutil import atomic_write, atomic_write_json
from voice.turn.pauses import choose_pause, opening_filler

log = logging.getLogger(__name__)
SAMPLE_RATE_HZ = 16000
FORMAT = "voice-turns"
FORMAT_VERSION = 2    # 2: no bare cuts after content words (a filler comes with them)


@dataclass(frozen=True)
class TurnBuildConfig:
    corpus: str
    seed: int = 0
    shard_size: int = 50
    limit_per_split: int = 0          # 0: every user utterance
    opening_share: float = 1 / 6
    pause_range_s: tuple[float, float] = (0.3, 1.2)   # the bench's pauses inside turns
    extra_voices: tuple[str, ...] = ()                 # EXTRA_VOICES names: each train utterance once more in one
    more_cuts: int = 0            # train questions: this many more pauses each, at other places (records `~cN`)
    answers: bool = False         # train questions: their dialogue's answer too, said in the user's voice (`~a`)

    def identity(self) -> dict:
        identity = {"corpus": str(Path(self.corpus).resolve().name), "seed": self.seed,
                    "limit_per_split": self.limit_per_split, "opening_share": round(self.opening_share, 4),
                    "pause_range_s": list(self.pause_range_s), "format_version": FORMAT_VERSION}
        if self.extra_voices:
            identity["extra_voices"] = list(self.extra_voices)
        if self.more_cuts:
            identity["more_cuts"] = self.more_cuts
        if self.answers:
            identity["answers"] = True
        return identity


def trim_silence(audio: np.ndarray, rate_hz: int = SAMPLE_RATE_HZ, below_peak_db: float = 45.0,
                 margin_s: float = 0.02) -> np.ndarray:
    """`audio` without the leading and trailing stretch quieter than peak - below_peak_db (10 ms frames)."""
    x = audio.astype(np.float32)
    hop = rate_hz // 100
    n = len(x) // hop
    if n == 0:
        return x
    db = 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(db >= max(db.max() - below_peak_db, -70.0))
    if len(loud) == 0:
        return x[:0]
    margin = int(margin_s * rate_hz)
    return x[max(0, loud[0] * hop - margin): min(len(x), (loud[-1] + 1) * hop + margin)]


def _seed(seed: int, uid: str) -> int:
    return int.from_bytes(hashlib.sha256(f"turns/{seed}/{uid}".encode()).digest()[:8], "little")


def user_rows(corpus: Path, limit_per_split: int = 0) -> list[dict]:
    """The corpus's user utterances, in manifest order (the first `limit_per_split` of each split), each with
    the text of the assistant's answer to it (`answer_text`, when the dialogue has one)."""
    path = corpus / "manifest.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build the corpus first (voice data build)")
    rows, per_split, last = [], {}, None
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r.get("role") == "assistant" and last is not None and r.get("dialogue_id") == last.get("dialogue_id"):
            last["answer_text"], last = r["text"], None
            continue
        last = None
        if r.get("role") != "user" or r.get("source") != "synthetic":
            continue
        if limit_per_split and per_split.get(r["split"], 0) >= limit_per_split:
            continue
        per_split[r["split"]] = per_split.get(r["split"], 0) + 1
        rows.append(r)
        last = r
    return rows


_SYNTH = None


def _init_worker() -> None:
    global _SYNTH
    from voice.data.voices import Synthesizer

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _SYNTH = Synthesizer()


def _say(text: str, row: dict) -> np.ndarray:
    from voice.data.voices import get_voice

    audio = _SYNTH.synthesize(text, get_voice(row["voice"]), SAMPLE_RATE_HZ, row["speed"], row["pitch_semitones"])
    return trim_silence(audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio)


def _write(out: Path, rel: str, audio: np.ndarray) -> None:
    import soundfile as sf

    tmp = out / f"{rel}.tmp"
    sf.write(str(tmp), audio, SAMPLE_RATE_HZ, subtype="PCM_16", format="WAV")
    os.replace(tmp, out / rel)


def shard_rows(task: tuple):
    """Worker side of `run_shards`: make the shard's WAV folder, then yield (out, base, row, config) for
    each of its rows, `base` being the row's WAV path without its piece name."""
    shard, rows, out_dir, config = task
    out = Path(out_dir)
    (out / "wav" / f"{shard:05d}").mkdir(parents=True, exist_ok=True)
    for row in rows:
        yield out, f"wav/{shard:05d}/{row['id']}", row, config


def _paused(out: Path, base: str, row: dict, rec: dict, chosen, rng: random.Random, config) -> bool:
    """Say the prefix and the rest of a chosen pause into `rec` (False when either came out empty)."""
    point, written = chosen
    prefix, rest = _say(written, row), _say(point.rest, row)
    if not (len(prefix) and len(rest)):
        return False
    _write(out, f"{base}_prefix.wav", prefix)
    _write(out, f"{base}_rest.wav", rest)
    rec.update(kind=point.kind, prefix_text=written, rest_text=point.rest,
               prefix_wav=f"{base}_prefix.wav", rest_wav=f"{base}_rest.wav",
               pause_s=round(rng.uniform(*config.pause_range_s), 3))
    return True


def _build_shard(task: tuple) -> list[dict]:
    records = []
    for out, base, row, config in shard_rows(task):
        rng = random.Random(_seed(config.seed, row["id"]))
        rec = {k: row[k] for k in ("id", "split", "voice", "speaker", "intent", "phrasing", "text", "speed",
                                   "pitch_semitones")}
        full = _say(row["text"], row)
        _write(out, f"{base}_full.wav", full)
        rec.update(full_wav=f"{base}_full.wav", full_s=round(len(full) / SAMPLE_RATE_HZ, 4))
        chosen = choose_pause(row["text"], rng)
        if chosen is not None:
            _paused(out, base, row, rec, chosen, rng, config)
        if rng.random() < config.opening_share:
            text = opening_filler(rng)
            opening = _say(text, row)
            if len(opening):
                _write(out, f"{base}_opening.wav", opening)
                rec.update(opening_text=text, opening_wav=f"{base}_opening.wav")
        records.append(rec)
        if row["split"] == "train":
            records += _more_records(out, base, row, rec, config)
    return records


def _more_records(out: Path, base: str, row: dict, rec: dict, config) -> list[dict]:
    """`more_cuts` and `answers` (train only): the question paused at other places (`~cN`: a prefix and its rest,
    and the same whole question as the record's), and the dialogue's answer said in the user's voice (`~a`: whole
    and paused)."""
    more = []
    rng = random.Random(_seed(config.seed, row["id"] + "~more"))
    taken = {(rec.get("prefix_text") or "").rstrip(",")}      # a place once, with its tune or without
    for n in range(1, config.more_cuts + 1):
        for _ in range(8):            # another place than the cuts so far (a short question may have none)
            chosen = choose_pause(row["text"], rng)
            if chosen is None or chosen[1].rstrip(",") in taken:
                continue
            cut = {**{k: rec[k] for k in ("split", "voice", "speaker", "intent", "phrasing", "text", "speed",
                                          "pitch_semitones", "full_wav", "full_s")}, "id": f"{row['id']}~c{n}"}
            if _paused(out, f"{base}~c{n}", row, cut, chosen, rng, config):
                taken.add(chosen[1].rstrip(","))
                more.append(cut)
            break
    answer = row.get("answer_text")
    if config.answers and answer:
        said = {**row, "text": answer}
        full = _say(answer, said)
        if len(full):
            _write(out, f"{base}~a_full.wav", full)
            rec_a = {**{k: rec[k] for k in ("split", "voice", "speaker", "intent", "speed", "pitch_semitones")},
                     "id": f"{row['id']}~a", "phrasing": "answer", "text": answer,
                     "full_wav": f"{base}~a_full.wav", "full_s": round(len(full) / SAMPLE_RATE_HZ, 4)}
            chosen = choose_pause(answer, rng)
            if chosen is not None:
                _paused(out, f"{base}~a", said, rec_a, chosen, rng, config)
            more.append(rec_a)
    return more


def is_more(record: dict) -> bool:
    """A record of `more_cuts` or `answers` (train only: never evaluated)."""
    return "~c" in record["id"] or record["id"].endswith("~a")


def original_id(record_id: str) -> str:
    """The id of the corpus utterance a record says (an extra voice's copy `d000012_00~x3` says `d000012_00`)."""
    return record_id.split("~", 1)[0]


def with_extra_voices(rows: list[dict], voices: tuple[str, ...]) -> list[dict]:
    """`rows`, then each train row once more in the next of `voices` (EXTRA_VOICES names, in turn).

    A copy keeps the row's text, speed and pitch; its id gains the voice's index (`~x3`), its speaker
    is the extra voice's."""
    from voice.data.voices import EXTRA_VOICES, extra_voices

    voices = extra_voices(voices)
    if not voices:
        return rows
    train = [r for r in rows if r["split"] == "train"]
    copies = []
    for i, row in enumerate(train):
        k = i % len(voices)
        spec = EXTRA_VOICES[voices[k]]
        copies.append({**row, "id": f"{row['id']}~x{k}", "voice": spec.name, "speaker": spec.speaker})
    return rows + copies


def build_turns(config: TurnBuildConfig, out: Path, workers: int = 0, progress: bool = True) -> dict:
    """Build (or finish) the paused-turn set in `out`; returns its summary."""
    rows = with_extra_voices(user_rows(Path(config.corpus), config.limit_per_split), config.extra_voices)
    records = run_shards(rows, out, _build_shard, config, "paused turns", workers, progress)
    summary = summarize(records)
    atomic_write_json(out / "build_info.json", {"format": FORMAT, "config": config.identity(), "status": "done",
                                                "summary": summary})
    return summary


def run_shards(rows: list[dict], out: Path, shard_fn, config, desc: str, workers: int = 0,
               progress: bool = True) -> list[dict]:
    """Run `shard_fn((shard, rows, out, config))` over shards of `rows` in worker processes, resumably.

    A finished shard's records are kept in shards/NNNNN.json and never redone; a folder built with
    other settings (`config.identity()`) is refused. Writes manifest.jsonl and returns the records.
    """
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    info_path = out / "build_info.json"
    if info_path.exists():
        old = json.loads(info_path.read_text())
        if old.get("config") != config.identity():
            raise ValueError(f"{out} was built with other settings ({old.get('config')}); use another --out")
    atomic_write_json(info_path, {"format": FORMAT, "config": config.identity(), "status": "building"})
    shards = [rows[i: i + config.shard_size] for i in range(0, len(rows), config.shard_size)]
    shard_dir = out / "shards"
    shard_dir.mkdir(exist_ok=True)
    todo = [(i, s, str(out), config) for i, s in enumerate(shards) if not (shard_dir / f"{i:05d}.json").exists()]
    bar = tqdm(total=len(shards), initial=len(shards) - len(todo), desc=desc, unit="shard", disable=not progress)
    workers = workers or max(1, min(os.cpu_count() or 1, 4))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        for shard, records in zip((t[0] for t in todo), pool.imap(shard_fn, todo)):
            atomic_write_json(shard_dir / f"{shard:05d}.json", records, indent=0)
            bar.update(1)
    bar.close()
    records = [r for i in range(len(shards)) for r in json.loads((shard_dir / f"{i:05d}.json").read_text())]
    atomic_write(out / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    return records


def summarize(records: list[dict]) -> dict:
    out: dict = {}
    for r in records:
        s = out.setdefault(r["split"], {"utterances": 0, "paused": 0, "openings": 0, "kinds": {}, "voices": {}})
        s["utterances"] += 1
        s["voices"][r["voice"]] = s["voices"].get(r["voice"], 0) + 1
        if "prefix_wav" in r:
            s["paused"] += 1
            s["kinds"][r["kind"]] = s["kinds"].get(r["kind"], 0) + 1
        s["openings"] += "opening_wav" in r
    return out


def load_records(turns_dir: Path, split: str | None = None) -> list[dict]:
    path = turns_dir / "manifest.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build the paused-turn set first (voice data turns)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


def read_piece(turns_dir: Path, rel: str) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(str(turns_dir / rel), dtype="float32")
    if rate != SAMPLE_RATE_HZ:
        raise ValueError(f"{rel}: {rate} Hz, expected {SAMPLE_RATE_HZ}")
    return audio
