"""`voice talk`: talk to the assistant from the microphone or a WAV file, hear or record the answer."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import statistics
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers, registered: dict) -> None:
    from voice.client import DEFAULT_URL

    p = subparsers.add_parser("talk", help="talk to the assistant (microphone or WAV file in, speakers or WAV out)",
                              description=__doc__)
    p.add_argument("--url", default=DEFAULT_URL, help=f"server WebSocket URL (default {DEFAULT_URL})")
    p.add_argument("--pipeline", default=None, help="pipeline to use (default: the server's default)")
    p.add_argument("--input", type=Path, metavar="FILE.wav", help="stream this file at real-time pace instead of the microphone")
    p.add_argument("--output", type=Path, metavar="FILE.wav", help="write the answer on the input's timeline (silence elsewhere)")
    p.add_argument("--events", type=Path, metavar="FILE.jsonl", help="write every event with client timestamps (docs/client.md)")
    p.add_argument("--play", action=argparse.BooleanOptionalAction, default=None,
                   help="play the answer on the speakers (default: yes, except file-to-file with --input and --output)")
    p.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    p.add_argument("--input-device", default=None, help="input device index or name (see --list-devices)")
    p.add_argument("--output-device", default=None, help="output device index or name")
    p.add_argument("--echo-guard", choices=("off", "raise", "half-duplex"), default="off",
                   help="without headphones: 'raise' needs longer speech to interrupt the assistant, "
                        "'half-duplex' mutes the microphone while the assistant speaks")
    p.add_argument("--barge-in-ms", type=float, default=1200.0, help="speech needed to interrupt with --echo-guard raise")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra hello option, e.g. end_silence_ms=400 (repeatable)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds of input")
    p.add_argument("--max-tail", type=float, default=30.0, metavar="S",
                   help="after the input file ends, wait at most S seconds for the answers")
    p.add_argument("--quiet", action="store_true", help="no live status (the summary is still printed)")
    p.set_defaults(func=run)


def parse_options(items: list[str]) -> dict[str, Any]:
    """`["end_silence_ms=400", "voice=joe"]` -> {"end_silence_ms": 400, "voice": "joe"}."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option needs KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def run(args: argparse.Namespace) -> int:
    from voice.talk.audio_io import DeviceError, list_devices, parse_device
    from voice.talk.session import TalkConfig, TalkError
    from voice.talk.status import StatusDisplay

    try:
        if args.list_devices:
            print(list_devices())
            return 0
        if args.input is not None and not args.input.is_file():
            raise ValueError(f"input file {args.input} does not exist")
        play = args.play if args.play is not None else not (args.input is not None and args.output is not None)
        config = TalkConfig(url=args.url, pipeline=args.pipeline, input_path=args.input, output_path=args.output,
                            events_path=args.events, play=play, input_device=parse_device(args.input_device),
                            output_device=parse_device(args.output_device), echo_guard=args.echo_guard,
                            barge_in_ms=args.barge_in_ms, options=parse_options(args.option),
                            duration_s=args.duration, max_tail_s=args.max_tail)
        display = StatusDisplay(quiet=args.quiet)
        result = asyncio.run(_main(config, display))
    except (TalkError, DeviceError, ValueError) as exc:
        print(f"voice talk: {exc}")
        return 1
    _print_summary(result, args)
    return 0


async def _main(config, display):
    from voice.talk.session import TalkSession

    session = TalkSession(config, display)
    loop = asyncio.get_running_loop()

    def on_sigint() -> None:   # first Ctrl-C: stop cleanly; a second one: the default (KeyboardInterrupt)
        display.info("stopping (Ctrl-C again to force)")
        session.request_stop()
        loop.remove_signal_handler(signal.SIGINT)

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError):
        pass
    return await session.run()


def _print_summary(result, args: argparse.Namespace) -> None:
    measured = [t.v2v_ms for t in result.turns if t.v2v_ms is not None]
    line = f"{len(result.turns)} turn(s) over {result.streamed_s:.1f} s"
    if measured:
        line += f"; voice-to-voice median {statistics.median(measured):.0f} ms, max {max(measured):.0f} ms"
        ends = {t.end_source for t in result.turns}
        line += " (from the end of speech in the file)" if ends == {"file"} else " (from the VAD's end of speech)"
    print(line)
    if args.output:
        print(f"answer written to {args.output}")
    if args.events:
        print(f"events written to {args.events}")
