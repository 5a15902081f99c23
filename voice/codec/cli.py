"""`voice train codec`, `voice eval codec` and `voice codec {pack,export,tokenize}`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from voice.assets import speech_dir

logger = logging.getLogger(__name__)

DEFAULT_CORPUS = "data/corpus/v2"  # what `voice data build` writes by default
DEFAULT_SPEECH = str(speech_dir())  # the real recordings the package carries, or $VOICE_SPEECH_DIR


def _train(args) -> int:
    import torch

    from voice.codec.compact import CompactCodecConfig
    from voice.codec.dataset import CropSampler, load_pools
    from voice.codec.train import TrainConfig
    from voice.codec.trainer import Trainer

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    # also on a GPU: the CPU side then only prepares batches, and torch's default of one thread per
    # core made tiny resampling ops crawl there (speed augmentation: 7 instead of 31 steps/s)
    torch.set_num_threads(args.threads)
    if device != "cpu":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    model_config = CompactCodecConfig(ratios=tuple(args.ratios), n_fft_factor=args.n_fft_factor,
                                      num_codebooks=args.num_codebooks, encoder_filters=args.encoder_filters,
                                      decoder_dim=args.decoder_dim, decoder_hidden=args.decoder_hidden,
                                      decoder_layers=args.decoder_layers)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, segment_frames=args.segment_frames,
                         lr=args.lr, adversarial_from_step=args.adversarial_from_step, seed=args.seed,
                         assistant_share=args.assistant_share, adversarial_weight=args.adversarial_weight,
                         feature_weight=args.feature_weight, speed_low=args.speed_range[0],
                         speed_high=args.speed_range[1], speed_prob=args.speed_prob)
    trainer = Trainer(Path(args.run_dir), model_config, config, device=device,
                      save_optimizer=not args.no_optimizer_state)
    pools = load_pools([Path(p) for p in args.data], trainer.model_config.sample_rate_hz)
    print(f"training audio: " + ", ".join(f"{g} {p.seconds / 60:.1f} min" for g, p in pools.items()))
    speed = (config.speed_low, config.speed_high) if config.speed_prob > 0 else None
    sampler = CropSampler(pools, config.segment_frames * trainer.model_config.hop_length, config.assistant_share,
                          seed=config.seed + trainer.step, speed_range=speed, speed_prob=config.speed_prob)
    stats = trainer.run(sampler, max_minutes=args.minutes, save_every_s=args.save_every_s,
                        progress=not args.no_progress)
    print(json.dumps({"run_dir": args.run_dir, "step": trainer.step, "last": stats}))
    return 0


def _export(args) -> int:
    from voice.codec.loader import export_run

    info = export_run(Path(args.run_dir), Path(args.out))
    print(json.dumps(info, indent=1))
    return 0


def _pack(args) -> int:
    from voice.codec.dataset import load_corpus_pools, pack_pools

    limits = {"assistant": args.assistant_minutes * 60, "user": args.user_minutes * 60}
    pools = load_corpus_pools([Path(c) for c in args.corpus], 16000, max_seconds=limits)
    print(json.dumps(pack_pools(pools, Path(args.out), 16000, audio_format=args.format,
                                opus_compression=args.opus_compression), indent=1))
    return 0


def _tokenize(args) -> int:
    from voice.codec.tokenize import tokenize_corpus, tokenize_user_variants

    if args.user_variants:
        splits = tuple(s for s in args.splits if s not in ("validation", "test")) or ("train",)
        summary = tokenize_user_variants(args.source, Path(args.corpus), args.user_variants, splits, args.limit,
                                         check=args.check)
        print(json.dumps(summary, indent=1))
        return 0
    summary = tokenize_corpus(args.source, Path(args.corpus), num_codebooks=args.num_codebooks,
                              splits=tuple(args.splits), limit=args.limit)
    print(json.dumps(summary, indent=1))
    return 0


def _eval(args) -> int:
    from voice.codec.evaluate import evaluate_codec, format_report

    report = evaluate_codec(args.source, corpus=Path(args.corpus) if args.corpus else None,
                            speech=Path(args.speech) if args.speech else None, num_codebooks=args.num_codebooks,
                            max_utterances=args.max_utterances, rtf_seconds=args.rtf_seconds,
                            chunk_frames=args.chunk_frames, save_audio=Path(args.save_audio) if args.save_audio else None,
                            wer=not args.speed_only, sets=tuple(args.sets))
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("codec", help="train the compact speech codec (resumable)")
    p.add_argument("--data", nargs="+", default=[DEFAULT_CORPUS], help="corpus folders and/or packed folders")
    p.add_argument("--run-dir", default="runs/codec/compact", help="checkpoints go here; an existing run resumes")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--segment-frames", type=int, default=50)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--adversarial-from-step", type=int, default=-1, help="start the MS-STFT GAN stage (-1: off)")
    p.add_argument("--adversarial-weight", type=float, default=0.05)
    p.add_argument("--feature-weight", type=float, default=0.1)
    p.add_argument("--assistant-share", type=float, default=0.5)
    p.add_argument("--speed-range", type=float, nargs=2, default=[0.8, 1.25], metavar=("LOW", "HIGH"),
                   help="speed augmentation range (resampling shifts pitch and formants)")
    p.add_argument("--speed-prob", type=float, default=0.0, help="fraction of crops speed-augmented (0: off)")
    p.add_argument("--num-codebooks", type=int, default=8)
    p.add_argument("--ratios", type=int, nargs="+", default=[8, 5, 4, 2], help="strides; product = hop (320: 50 Hz)")
    p.add_argument("--n-fft-factor", type=int, default=4, help="iSTFT window in hops")
    p.add_argument("--encoder-filters", type=int, default=24)
    p.add_argument("--decoder-dim", type=int, default=256)
    p.add_argument("--decoder-hidden", type=int, default=768)
    p.add_argument("--decoder-layers", type=int, default=6)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes")
    p.add_argument("--save-every-s", type=float, default=300.0)
    p.add_argument("--no-optimizer-state", action="store_true", help="save weights only (smaller checkpoints)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_train)


def _add_eval(sub) -> None:
    p = sub.add_parser("codec", help="intelligibility (Whisper WER) and streaming speed of a codec source")
    p.add_argument("--source", default="compact", help="'compact', a checkpoint path, or encodec_24khz[:kbps]")
    p.add_argument("--corpus", default=DEFAULT_CORPUS, help="corpus whose test split is used ('' to skip)")
    p.add_argument("--speech", default=DEFAULT_SPEECH, help="folder of real speech with manifest.tsv ('' to skip)")
    p.add_argument("--num-codebooks", type=int, default=None)
    p.add_argument("--max-utterances", type=int, default=30, help="corpus test utterances to use")
    p.add_argument("--sets", nargs="+", default=["corpus_assistant", "corpus_user", "real_speech"],
                   help="which sets to evaluate (corpus_assistant corpus_user real_speech)")
    p.add_argument("--rtf-seconds", type=float, default=10.0, help="audio length for the streaming speed test")
    p.add_argument("--chunk-frames", type=int, default=1, help="frames per streaming step in the speed test")
    p.add_argument("--save-audio", default=None, help="folder to write resynthesized WAVs into")
    p.add_argument("--speed-only", action="store_true",
                   help="skip the Whisper WER part; needs no data (times the packaged recordings "
                        "when --corpus and --speech give none)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_eval)


def _add_codec(sub) -> None:
    group = sub.add_parser("codec", help="codec utilities: pack training audio, export a run, tokenize a corpus")
    tools = group.add_subparsers(dest="codec_command", metavar="WHAT")
    p = tools.add_parser("pack", help="pack corpus train audio into FLAC or Opus pools (to ship to a GPU machine)")
    p.add_argument("--corpus", nargs="+", default=[DEFAULT_CORPUS])
    p.add_argument("--out", required=True)
    p.add_argument("--assistant-minutes", type=float, default=20.0)
    p.add_argument("--user-minutes", type=float, default=15.0)
    p.add_argument("--format", choices=["flac", "opus"], default="flac")
    p.add_argument("--opus-compression", type=float, default=0.87, help="libsndfile Opus compression level 0..1")
    p.set_defaults(func=_pack)
    p = tools.add_parser("export", help="write a run's weights as a shippable inference checkpoint")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--out", default="models/codec/compact_codec.pt")
    p.set_defaults(func=_export)
    p = tools.add_parser("tokenize", help="encode a corpus into cached codes for the speech LM")
    p.add_argument("--source", default="compact")
    p.add_argument("--corpus", default=DEFAULT_CORPUS)
    p.add_argument("--num-codebooks", type=int, default=None)
    p.add_argument("--splits", nargs="+", default=["train", "validation", "test"])
    p.add_argument("--limit", type=int, default=None, help="at most this many utterances (for a quick check)")
    p.add_argument("--user-variants", type=int, default=0,
                   help="instead: encode this many new-voice versions of each train-split user utterance")
    p.add_argument("--check", type=int, default=0, help="with --user-variants: Whisper WER of this many variants")
    p.set_defaults(func=_tokenize)


def register(subparsers, registered: dict) -> None:
    from voice.cli import command_group

    _add_train(command_group(subparsers, registered, "train", "train a model"))
    _add_eval(command_group(subparsers, registered, "eval", "evaluate a model"))
    _add_codec(subparsers)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m voice.codec.cli train codec ...`) for machines without the full project."""
    parser = argparse.ArgumentParser(prog="voice-codec")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    register(subparsers, {})
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
