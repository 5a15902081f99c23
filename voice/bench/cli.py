"""`voice bench`: latency of pipelines on scripted turns, written to latency_reports/."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers, registered: dict) -> None:
    p = subparsers.add_parser("bench", help="measure voice-to-voice latency of pipelines on scripted turns",
                              description=__doc__)
    p.add_argument("--pipelines", default=None,
                   help="comma-separated pipeline names, all run in the same run (default: echo, unless --variant is given)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=PIPELINE[:KEY=VALUE,...]",
                   help="also run PIPELINE under NAME with its own hello options over the --option ones, e.g. "
                        "same-brain=cascade:llm_backend=speechlm (values may not hold commas); repeatable")
    p.add_argument("--set", dest="set_name", default="shared-speech", choices=("shared-speech", "corpus-test", "paused-turns"),
                   help="scripted turns: the real recordings the package carries (voice/assets/speech), the corpus test "
                        "split, or its questions said with a pause inside (voice data turns; counts premature ends)")
    p.add_argument("--turns", type=int, default=0, help="timed turns per pipeline or variant (default: one pass over the set)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N clips of the set")
    p.add_argument("--out", default="latency_reports", help="report folder")
    p.add_argument("--name", default=None, help="report name (default: <variant names>_<set>)")
    p.add_argument("--url", default=None, help="bench a running server instead of starting one in-process")
    p.add_argument("--barge-in", action="store_true", help="also interrupt each answer and time the clear")
    p.add_argument("--barge-in-mix", action="store_true",
                   help="with --barge-in: play, in turn, an interruption, a backchannel, a noise and the assistant's "
                        "own voice over the answers (data/barge/v1), and count the false interruptions")
    p.add_argument("--resume", action="store_true", help="reuse the finished turns of an interrupted run")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="hello option for every variant's sessions (e.g. end_silence_ms=500); repeatable")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="the in-process server's torch threads per model call (0: one per core), as voice serve's")
    p.add_argument("--speechlm-in-process", action="store_true",
                   help="the in-process server runs the speech LM on a thread of its own process, not in a process "
                        "of its own (voice serve's --speechlm-in-process)")
    p.add_argument("--timeout-s", type=float, default=60.0, help="per-turn wait for the answer")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up turn")
    p.add_argument("--speech-dir", default=None, help="folder of recordings for --set shared-speech")
    p.add_argument("--corpus-dir", default=None, help="corpus folder for --set corpus-test")
    p.add_argument("--turns-dir", default=None, help="paused-turn set for --set paused-turns (default data/turns/v2)")
    p.add_argument("--browser", action="store_true",
                   help="also play the same clips through the served page in headless Chromium, one session per "
                        "variant, and report the page's own voice-to-voice beside the bench's (variants without options)")
    p.add_argument("--browser-gap-s", type=float, default=4.0,
                   help="with --browser: silence after each clip, beyond the clip's own length, for the answer")
    p.add_argument("--browser-new-conversation", action="store_true",
                   help="with --browser: the page starts a new conversation before each clip after the first, so that "
                        "each question is answered as the first of a conversation, as in the bench's sessions")
    p.add_argument("--chromium", default=None, help="with --browser: the Chromium executable (default: chromium on PATH)")
    p.add_argument("--screenshot", default=None, metavar="PNG",
                   help="with --browser: save the page at the end of the last variant's session (docs/client.png)")
    p.add_argument("--write-reference", metavar="JSON", default=None,
                   help="only (re)compute the reference speech boundaries of --speech-dir into JSON "
                        "(applying the review file given by --review) and exit")
    p.add_argument("--review", default=None, help="review JSON (overrides + notes) for --write-reference")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voice import pipelines as registry
    from voice.bench import sets
    from voice.bench.variants import make_variants, parse_options

    if not getattr(args, "verbose", 0):  # keep the progress bar readable: no per-session log lines
        for noisy in ("websockets", "voice.server", "voice.stages", "matplotlib"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    speech_dir = Path(args.speech_dir) if args.speech_dir else sets.SPEECH_DIR
    if args.write_reference:
        from voice.bench.reference import write_reference_table

        table = write_reference_table(speech_dir, args.write_reference, args.review)
        for name, b in table["files"].items():
            print(f"{name:42s} {b['start_s']:7.3f} {b['end_s']:7.3f}  segments {len(b['segments'])}")
        return 0
    try:
        variants = make_variants(args.pipelines, args.variant, registry.available())
        options = parse_options(args.option)
        items = sets.load_set(args.set_name, speech_dir=speech_dir,
                              corpus_dir=Path(args.corpus_dir) if args.corpus_dir else sets.CORPUS_DIR, limit=args.limit,
                              turns_dir=Path(args.turns_dir) if args.turns_dir else sets.TURNS_DIR)
        if args.turns < 0:
            raise ValueError("--turns must be >= 0")
        if args.browser:
            _check_browser(args, variants, options)
        elif args.browser_new_conversation:
            raise ValueError("--browser-new-conversation goes with --browser")
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    if args.set_name == "shared-speech":
        log.info("set shared-speech has no expected answers: answer correctness is not checked")
    return bench(args, variants, options, items)


def _check_browser(args: argparse.Namespace, variants: tuple, options: dict) -> None:
    """--browser needs Playwright and Chromium, and variants the page can open (it sends no hello options)."""
    from voice.bench.browser import find_chromium

    if options or any(v.options for v in variants):
        raise ValueError("--browser: the page sends no hello options, so its variants can have none "
                         "(use --pipelines, and the server's defaults)")
    if args.barge_in:
        raise ValueError("--browser does not play interruptions: run it without --barge-in")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError as exc:
        raise ValueError("--browser needs Playwright (pip install playwright; its browser download is not needed)") from exc
    args.chromium = find_chromium(args.chromium)


def _run_browser(args: argparse.Namespace, url: str, variants: tuple, items: list, out_dir: Path, partial: Path,
                 done: dict, bar) -> list[dict]:
    """The same clips through the served page, one Chromium session per variant (already done ones reused)."""
    import json

    from voice.bench.browser import BROWSER_SUFFIX, run_browser

    records = []
    for i, v in enumerate(variants):
        kept = [done.get((v.name + BROWSER_SUFFIX, k)) for k in range(len(items))]
        if all(kept):
            records += kept
            bar.update(len(items))
            continue
        seen = [0]

        def progress(n: int) -> None:
            step = min(n, len(items)) - seen[0]
            if step > 0:
                bar.update(step)
                seen[0] += step

        last = i == len(variants) - 1
        recs = run_browser(url, v.name, v.pipeline, items, out_dir, args.browser_gap_s, args.chromium, progress,
                           Path(args.screenshot) if args.screenshot and last else None,
                           new_conversations=args.browser_new_conversation)
        bar.update(len(items) - seen[0])
        with open(partial, "a", encoding="utf-8") as f:
            for rec in recs:
                f.write(json.dumps(rec) + "\n")
        records += recs
    return records


def bench(args: argparse.Namespace, variants: tuple, options: dict, items: list) -> int:
    """Run every variant's turns (interleaved) against one server and write the reports; returns the exit status."""
    import asyncio

    from tqdm import tqdm

    from voice.bench.report import git_commit, machine, write_reports
    from voice.bench.runner import RunConfig, Schedule, ServerThread, load_partial, run_all

    barge_items = ()
    if args.barge_in and args.barge_in_mix:
        from voice.bench.sets import barge_in_mix

        barge_items = tuple(barge_in_mix())
    cfg = RunConfig(variants=variants, turns=args.turns, turn_timeout_s=args.timeout_s, barge_in=args.barge_in,
                    barge_items=barge_items,
                    warmup=not args.no_warmup, options=options)
    names = tuple(v.name for v in variants)
    name = args.name or f"{'-'.join(names)}_{args.set_name}" + ("_barge-in" if args.barge_in else "") + (
        "-mix" if args.barge_in and args.barge_in_mix else "")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f"{name}.partial.jsonl"
    done = load_partial(partial) if args.resume else {}
    if not args.resume and partial.exists():
        partial.unlink()
    if done:
        log.info("resuming: %d finished turns reused from %s", len(done), partial)
    total = len(Schedule.make(names, len(items), args.turns).keys) + (len(names) * len(items) if args.browser else 0)
    load_start = machine()["loadavg"]
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    bar = tqdm(total=total, desc=f"bench {name}", unit="turn")

    def on_turn(rec: dict) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{rec['variant']} v2v {rec.get('v2v_ms')} ms")

    def go(url: str) -> list[dict]:
        records = asyncio.run(run_all(url, items, cfg, partial, done, on_turn))
        if args.browser:
            records += _run_browser(args, url, variants, items, out_dir, partial, done, bar)
        return records

    try:
        if args.url:
            server_desc, records = args.url, go(args.url)
        else:
            own_process = not args.speechlm_in_process
            with ServerThread(variants[0].pipeline, args.torch_threads, speechlm_process=own_process) as srv:
                server_desc = (f"in-process VoiceServer at {srv.url} (own thread and event loop, torch threads "
                               f"{args.torch_threads or 'default'}, the speech LM "
                               f"{'in a process of its own' if own_process else 'on a worker thread'})")
                records = go(srv.url)
    except (OSError, ConnectionError, KeyError, RuntimeError) as exc:
        bar.close()
        log.error("bench failed: %s (finished turns are kept in %s; rerun with --resume)", exc, partial)
        return 1
    bar.close()
    from dataclasses import asdict

    run_cfg = {k: v for k, v in asdict(cfg).items() if k not in ("variants", "options", "barge_items")}
    if cfg.barge_items:
        run_cfg["barge_items"] = [f"{i.item_id} {i.text}" for i in cfg.barge_items]
    meta = {"name": name, "date": started, "command": "voice " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "machine": machine(), "load_start": load_start, "load_end": machine()["loadavg"], "git": git_commit(),
            "server": server_desc, "n_items": len(items),
            "config": {"set": args.set_name, "pipelines": list(names), "options": options,
                       "variants": {v.name: {"pipeline": v.pipeline, "options": v.options} for v in variants},
                       "run": run_cfg,
                       "browser": {"gap_s": args.browser_gap_s, "chromium": args.chromium,
                                   "new_conversation": args.browser_new_conversation} if args.browser else None}}
    stem = time.strftime("%Y%m%d-%H%M%S") + f"_{name}"
    paths = write_reports(out_dir, stem, meta, records)
    partial.unlink(missing_ok=True)
    _print_summary(paths)
    return 0


def _print_summary(paths: dict) -> None:
    import json

    from voice.bench.report import variants_of

    report = json.loads(paths["json"].read_text())
    summary, described = report["summary"], {v.name: v.describe() for v in variants_of(report["meta"]["config"])}
    for name, s in summary.items():
        v = s.get("v2v_ms", {})
        line = f"{described.get(name, name)}: {s['turns']} turns, v2v p50 {v.get('p50')} ms, p95 {v.get('p95')} ms"
        if "target" in s:
            t = s["target"]
            line += f"; v2v - end_silence p95 {t['p95_ms']} ms (target <= {t['limit_ms']:.0f}: {'met' if t['met'] else 'NOT met'})"
        if s["ignored_options"]:
            line += f"; ignored by the server: {', '.join(s['ignored_options'])}"
        print(line)
    print("reports:", ", ".join(str(p) for p in paths.values()))
