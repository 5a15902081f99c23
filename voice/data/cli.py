"""`voice data build|import|voices`: the corpus commands."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

log = logging.getLogger(__name__)


def register(subparsers, registered: dict) -> None:
    """Add `voice data` with its `build`, `import` and `voices` subcommands."""
    data = subparsers.add_parser("data", help="build the spoken-dialogue corpus or import real recordings")
    sub = data.add_subparsers(dest="data_command", metavar="WHAT")
    registered["data"] = sub          # other modules add theirs (voice.speechlm.ear_cache: `data ear`)

    b = sub.add_parser("build", help="synthesise the dialogue corpus (resumable)")
    b.add_argument("--out", default="data/corpus/v2", help="corpus folder (default: data/corpus/v2)")
    b.add_argument("--seed", type=int, default=0, help="same seed, same corpus (default 0)")
    b.add_argument("--small", action="store_true", help="test-sized corpus (36 dialogues, well under a minute)")
    b.add_argument("--train", type=int, help="training dialogues (default 5100)")
    b.add_argument("--validation", type=int, help="validation dialogues (default 320)")
    b.add_argument("--test", type=int, help="test dialogues (default 580)")
    b.add_argument("--sample-rate", type=int, default=16000, dest="sample_rate_hz", help="WAV rate in Hz (default 16000)")
    b.add_argument("--augment", type=float, default=0.25, help="share of user turns with noise/gain/reverb (0 disables)")
    b.add_argument("--voices", default="", help="comma-separated user voices to use (default: all; see `voice data voices`)")
    b.add_argument("--kokoro", action="store_true", help="add Kokoro voice styles (needs voice[kokoro]; slow)")
    b.add_argument("--workers", type=int, default=0, help="processes (default: one per core)")
    b.add_argument("--shard-size", type=int, default=25, help="dialogues per resumable shard")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=_build)

    i = sub.add_parser("import", help="bring real recordings with transcripts into the corpus format")
    i.add_argument("source", help="a folder of WAVs (+ .txt transcripts or a manifest inside) or a manifest file (.tsv/.csv/.jsonl)")
    i.add_argument("--out", required=True, help="corpus folder to write (a new one, or an imported one to extend)")
    i.add_argument("--split", default="test", choices=("train", "validation", "test"), help="split of the imported utterances (default test)")
    i.add_argument("--name", default="", help="source name used in ids and voice names (default: the folder name)")
    i.add_argument("--sample-rate", type=int, default=16000, dest="sample_rate_hz", help="WAV rate in Hz (default 16000)")
    i.set_defaults(func=_import)

    c = sub.add_parser("check", help="Whisper tiny.en WER of a sample of a corpus (non-espeak voices)")
    c.add_argument("--out", default="data/corpus/v2", help="corpus folder (default: data/corpus/v2)")
    c.add_argument("--per-voice", type=int, default=10, help="utterances per voice (default 10)")
    c.add_argument("--seed", type=int, default=0, help="sample seed")
    c.set_defaults(func=_check)

    t = sub.add_parser("turns", help="the paused-turn set: corpus questions whole, cut at a pause, and finished (resumable)")
    _turn_set_arguments(t, "data/turns/v2")
    t.add_argument("--extra-voices", default="", help="each train question also said by one of these "
                   "voice.data.voices.EXTRA_VOICES names, in turn (comma-separated, or 'all'; default none)")
    t.add_argument("--more-cuts", type=int, default=0, help="each train question also paused at up to N other "
                   "places (another prefix and rest each; default 0)")
    t.add_argument("--answers", action="store_true", help="each train question's answer also said, whole and "
                   "paused, in the user's voice (more sentences to learn where one is finished)")
    t.set_defaults(func=_turns)

    g = sub.add_parser("barge", help="the barge-in set: interruptions and backchannels in the corpus's voices (resumable)")
    _turn_set_arguments(g, "data/barge/v1")
    g.set_defaults(func=_barge)

    v = sub.add_parser("voices", help="list the TTS voices and their split")
    v.add_argument("--json", action="store_true", help="machine-readable output")
    v.set_defaults(func=_voices)
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])


def _build(args: argparse.Namespace) -> int:
    from voice.data.build import DEFAULT_DIALOGUES, SMALL_DIALOGUES, BuildConfig, build
    from voice.data.manifest import format_summary
    from voice.data.voices import VoiceError

    counts = dict(SMALL_DIALOGUES if args.small else DEFAULT_DIALOGUES)
    for split in counts:
        if getattr(args, split) is not None:
            counts[split] = getattr(args, split)
    if any(n < 0 for n in counts.values()) or not sum(counts.values()):
        print("error: dialogue counts must be >= 0 and not all zero", file=sys.stderr)
        return 2
    voices = tuple(v.strip() for v in args.voices.split(",") if v.strip())
    config = BuildConfig(out_dir=args.out, seed=args.seed, dialogues=counts, sample_rate_hz=args.sample_rate_hz,
                         augment_probability=args.augment, shard_size=args.shard_size, workers=args.workers,
                         user_voices=voices, kokoro=args.kokoro)
    start = time.monotonic()
    try:
        summary = build(config, progress=not args.no_progress)
    except (VoiceError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    print(f"built {args.out} in {time.monotonic() - start:.1f} s")
    return 0


def _turn_set_arguments(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--corpus", default="data/corpus/v2", help="corpus whose user turns are said (default: data/corpus/v2)")
    p.add_argument("--out", default=out, help=f"folder to write (default: {out})")
    p.add_argument("--seed", type=int, default=0, help="same seed, same set (default 0)")
    p.add_argument("--limit", type=int, default=0, help="user utterances per split (default: all)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _turn_sets(args: argparse.Namespace, build_config, build, describe, **settings) -> int:
    """Build a turn-taking set (`voice data turns` or `barge`) from a corpus and print its summary."""
    from pathlib import Path

    from voice.data.voices import VoiceError

    start = time.monotonic()
    config = build_config(corpus=args.corpus, seed=args.seed, limit_per_split=max(0, args.limit), **settings)
    try:
        summary = build(config, Path(args.out), workers=args.workers, progress=not args.no_progress)
    except (VoiceError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for split, s in summary.items():
        print(f"{split:>10}: {describe(s)}")
    print(f"built {args.out} in {time.monotonic() - start:.1f} s")
    return 0


def _turns(args: argparse.Namespace) -> int:
    from voice.data.voices import extra_voices
    from voice.turn.data import TurnBuildConfig, build_turns

    def describe(s: dict) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(s["kinds"].items()))
        return (f"{s['utterances']} questions, {s['paused']} paused ({kinds}), {s['openings']} openings, "
                f"{len(s['voices'])} voices")
    try:
        voices = tuple(extra_voices(args.extra_voices))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.more_cuts < 0:
        print("error: --more-cuts must be >= 0", file=sys.stderr)
        return 2
    return _turn_sets(args, TurnBuildConfig, build_turns, describe, extra_voices=voices,
                      more_cuts=args.more_cuts, answers=args.answers)


def _barge(args: argparse.Namespace) -> int:
    from voice.turn.barge_data import BargeBuildConfig, build_barge

    return _turn_sets(args, BargeBuildConfig, build_barge, lambda s: f"{s['interrupts']} interruptions, "
                      f"{s['backchannels']} backchannels, {s['voices']} voices")


def _import(args: argparse.Namespace) -> int:
    from voice.data.importer import ImportError_, import_recordings
    from voice.data.manifest import format_summary

    try:
        summary = import_recordings(args.source, args.out, split=args.split, name=args.name, sample_rate_hz=args.sample_rate_hz)
    except (ImportError_, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


def _check(args: argparse.Namespace) -> int:
    from voice.data.verify import check_corpus

    try:
        result = check_corpus(args.out, per_voice=args.per_voice, seed=args.seed)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for voice, wer in result["per_voice"].items():
        print(f"{voice:<34} WER {100 * wer:5.1f}%")
    print(f"overall: WER {100 * (result['wer'] or 0):.1f}% on {result['utterances']} utterances")
    return 0


def _voices(args: argparse.Namespace) -> int:
    from voice.data.voices import ASSISTANT_VOICE, EXTRA_VOICES, VOICES, kokoro_voices

    voices = list(VOICES.values()) + kokoro_voices() + list(EXTRA_VOICES.values())
    if args.json:
        print(json.dumps([{"name": v.name, "backend": v.backend, "speaker": v.speaker, "split": v.split} for v in voices], indent=1))
        return 0
    for v in voices:
        role = ("assistant" if v.name == ASSISTANT_VOICE else "extra: the ear encoder's training only"
                if v.split == "extra" else f"user, {v.split}")
        print(f"{v.name:<34} {v.backend:<9} speaker={v.speaker:<22} ({role})")
    if not any(v.backend == "kokoro" for v in voices):
        print("(Kokoro styles: not installed; pip install 'voice[kokoro]' and build with --kokoro)")
    return 0
