"""`voice data align`: when each word of an utterance starts, by Whisper forced alignment of its known text.

The speech LM's word-aligned inner monologue (`Layout.text_align = "words"`) writes each word of the
answer on the text stream at the frame where the audio starts saying it, as Moshi does, instead of
writing all the words first. Its training data needs each word's start in the assistant's audio.
The corpus knows the words (it synthesised them), so nothing is transcribed: Whisper tiny.en (the
CTranslate2 model that ships for the cascade) is given the audio and the text, and the
cross-attention of its alignment heads, through dynamic time warping (CTranslate2's `align`, what
faster-whisper's word timestamps use), says at which encoder frame each text token starts. The warping
path always begins at frame 0, so the first word's start is the audio's onset (its first frame within
35 dB of the loudest) instead. Whisper's
encoder frames are 20 ms, the codec's too, so a start is a codec frame index.

The words are the text split at white space, exactly as `voice.speechlm.format` splits them.
`<corpus>/align/whisper-tiny.en/index.jsonl` holds one line per utterance: {"id", "words",
"starts", "ends"} (frames). Resumable: utterances already aligned are skipped; lines are appended
as they are made.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ALIGN_ID = "whisper-tiny.en"
SAMPLE_RATE_HZ = 16000
FRAME_SAMPLES = 320


class WordAligner:
    """Whisper tiny.en's forced alignment: `align(audio, text)` -> per word (start, end) frames."""

    def __init__(self, model_dir: Path | None = None, threads: int = 2) -> None:
        import ctranslate2
        import tokenizers
        from faster_whisper.feature_extractor import FeatureExtractor
        from faster_whisper.tokenizer import Tokenizer

        from voice.speechlm.whisper_ear import whisper_dir

        folder = Path(model_dir or whisper_dir())
        self._model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="int8", intra_threads=threads)
        self._tokenizer = Tokenizer(tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")), multilingual=False)
        self._mel = FeatureExtractor(feature_size=80)

    def align(self, audio: np.ndarray, text: str) -> tuple[list[int], list[int]]:
        """Start and end frame (20 ms) of each white-space word of `text` in 16 kHz `audio`."""
        import ctranslate2

        words = text.split()
        frames = len(audio) // FRAME_SAMPLES
        if not words:
            return [], []
        if frames < 2:
            raise ValueError(f"{len(audio)} samples: too short to align {len(words)} words")
        pieces = [self._tokenizer.encode(" " + w) for w in words]
        if any(not p for p in pieces):
            raise ValueError(f"a word of {text!r} has no Whisper tokens")
        mel = self._mel(np.ascontiguousarray(audio[: frames * FRAME_SAMPLES], np.float32), padding=0)[:, : 2 * frames]
        mel = np.ascontiguousarray(mel[None], np.float32)
        tokens = [t for p in pieces for t in p]
        result = self._model.align(ctranslate2.StorageView.from_array(mel), list(self._tokenizer.sot_sequence),
                                   [tokens + [self._tokenizer.eot]], mel.shape[2])[0]
        text_index = np.array([pair[0] for pair in result.alignments])
        time_index = np.array([pair[1] for pair in result.alignments])
        # the first time index of each token (the path's jumps), then each word's first token
        jumps = np.pad(np.diff(text_index), (1, 0), constant_values=1).astype(bool)
        token_start = time_index[jumps]
        bounds = np.concatenate([[0], np.cumsum([len(p) for p in pieces])])
        if len(token_start) < bounds[-1] + 1:
            raise ValueError(f"alignment of {text!r} lost tokens ({len(token_start)} of {bounds[-1] + 1})")
        starts = [int(min(token_start[b], frames - 1)) for b in bounds[:-1]]
        ends = [int(min(token_start[b], frames)) for b in bounds[1:]]
        # the warping path starts at frame 0, so the first word always "starts" there: take the audio's onset
        starts[0] = max(0, min(speech_onset(audio[: frames * FRAME_SAMPLES]), ends[0] - 1))
        return starts, ends


def speech_onset(audio: np.ndarray, below_peak_db: float = 35.0) -> int:
    """The first 20 ms frame whose RMS is within `below_peak_db` of the loudest frame's."""
    frames = len(audio) // FRAME_SAMPLES
    if frames == 0:
        return 0
    rms = np.sqrt(np.mean(np.square(audio[: frames * FRAME_SAMPLES].reshape(frames, FRAME_SAMPLES), dtype=np.float64), 1))
    loud = np.flatnonzero(rms >= max(rms.max() * 10 ** (-below_peak_db / 20), 1e-5))
    return int(loud[0]) if loud.size else 0


def align_dir(corpus: Path) -> Path:
    return Path(corpus) / "align" / ALIGN_ID


def load_word_timings(corpus: Path) -> dict[str, dict]:
    """id -> {"words", "starts", "ends"} of every aligned utterance (empty if none)."""
    path = align_dir(corpus) / "index.jsonl"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:          # a line cut by an interrupted run: aligned again next time
                continue
            out[row["id"]] = row
    return out


def cache_word_timings(corpus: Path, splits: tuple[str, ...] = ("train", "validation", "test"),
                       roles: tuple[str, ...] = ("assistant",), threads: int = 2, limit: int | None = None,
                       progress: bool = True) -> dict:
    """Align every utterance of `splits` and `roles` once; later calls add only what is missing."""
    import soundfile as sf
    from tqdm import tqdm

    from voice.data.manifest import read_manifest

    corpus = Path(corpus)
    folder = align_dir(corpus)
    folder.mkdir(parents=True, exist_ok=True)
    done = load_word_timings(corpus)
    records = [r for r in read_manifest(corpus) if r["split"] in splits and r["role"] in roles][:limit]
    todo = [r for r in records if r["id"] not in done or done[r["id"]]["words"] != r["text"].split()]
    aligner = WordAligner(threads=threads) if todo else None
    failed = []
    with open(folder / "index.jsonl", "a") as out:
        for record in tqdm(todo, desc="align words", disable=not progress):
            audio, rate = sf.read(str(corpus / record["wav"]), dtype="float32")
            if audio.ndim > 1:
                audio = audio.mean(1)
            if rate != SAMPLE_RATE_HZ:
                from voice.audio import resample

                audio = resample(audio, rate, SAMPLE_RATE_HZ)
            try:
                starts, ends = aligner.align(audio, record["text"])
            except ValueError as e:
                failed.append(f"{record['id']}: {e}")
                continue
            out.write(json.dumps({"id": record["id"], "words": record["text"].split(), "starts": starts, "ends": ends}) + "\n")
            out.flush()
    return {"folder": str(folder), "utterances": len(records), "aligned_now": len(todo) - len(failed),
            "failed": failed[:10], "failed_count": len(failed)}


def _run(args) -> int:
    roles = ("user", "assistant") if args.roles == "both" else (args.roles,)
    result = cache_word_timings(Path(args.corpus), tuple(args.splits.split(",")), roles, args.threads, args.limit,
                                progress=not args.no_progress)
    print(json.dumps(result))
    return 0


def register(subparsers, registered: dict) -> None:
    from voice.cli import command_group

    data = command_group(subparsers, registered, "data", "build and check the corpus")
    p = data.add_parser("align", help="when each word of the assistant's turns starts (Whisper forced alignment; resumable)")
    p.add_argument("--corpus", default="data/corpus/v2")
    p.add_argument("--splits", default="train,validation,test", help="comma-separated splits")
    p.add_argument("--roles", default="assistant", choices=["user", "assistant", "both"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="at most this many utterances (a first look)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)
