"""`voice train lm` and `voice eval lm`: the speech LM's training and evaluation commands (docs/speechlm.md)."""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import replace
from pathlib import Path

log = logging.getLogger(__name__)


def load_tokenizer(ref: str):
    """SmolLM2's tokenizer (or another Llama-style text LM's) from a path, an offline bundle or the hub."""
    from transformers import AutoTokenizer

    from voice.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(ref).location)


def load_text_ids(checkpoint: str | Path):
    """The text ids of a saved model: its tokenizer and the ids it kept."""
    from voice.speechlm.model import SpeechLMConfig
    from voice.speechlm.text import TextIds

    return TextIds(load_tokenizer(str(checkpoint)), SpeechLMConfig.from_pretrained(checkpoint).text_token_ids)


def load_speech_lm(folder: Path, shown: str):
    """(model in float32, text ids) of a saved speech LM; ValueError naming `shown` when there is none or it is
    broken (a server turns it into a clean hello error and goes on)."""
    if not (Path(folder) / "config.json").is_file():
        raise ValueError(f"no speech LM at {shown}: train one (docs/speechlm.md)")
    import torch

    from voice.speechlm.model import SpeechLM

    try:
        return SpeechLM.from_pretrained(folder, dtype=torch.float32).eval(), load_text_ids(folder)
    except Exception as exc:
        raise ValueError(f"the speech LM at {shown} could not be loaded: {type(exc).__name__}: {exc}") from None


def _train(args: argparse.Namespace) -> int:
    import torch

    from voice.codec.loader import load_codec
    from voice.codec.tokenize import cache_id
    from voice.speechlm.batch import collate
    from voice.speechlm.data import ExampleStream, load_dialogues
    from voice.speechlm.text import TextIds, choose_ids
    from voice.speechlm.train import PRESETS, build_model, config_with, train

    preset_model, preset_train = PRESETS[args.preset]
    cfg = config_with(preset_train, steps=args.steps, batch_size=args.batch_size, lr=args.lr, threads=args.threads,
                      eval_every=args.eval_every, save_every=args.save_every,
                      max_steps_per_example=args.max_steps_per_example, max_minutes=args.minutes,
                      data_workers=args.data_workers, hearing_weight=args.hearing_weight,
                      typed_batch_size=args.typed_batch, schedule=args.schedule, typed_only=args.typed_only or None,
                      bf16=False if args.fp32 else None, length_buckets=args.length_buckets,
                      answer_noise=args.answer_noise)
    out = Path(args.out or f"runs/lm/{args.preset}")
    codec = load_codec(args.codec)
    codec_id = cache_id(codec)
    resume = (out / "checkpoint" / "config.json").exists()
    k = model_k = args.num_codebooks
    if args.heard_text and args.user_variants:
        raise SystemExit("heard text is spelled from each user turn's own audio: no --user-variants with it")
    if args.init and not resume and args.base:
        raise SystemExit("--init starts from a speech LM of this project: no --base with it")
    # --init with what makes a model (an ear, a hearing encoder, heard text, delays): a new model of that
    # kind, with the init's text ids and every weight of its that fits (the brain alone -> the whole model)
    remake = bool(args.init and not resume and (args.ear or args.hearing_encoder or args.heard_text or args.delays))
    source = out / "checkpoint" if resume else None if remake else args.init   # a saved model's weights, a fresh optimizer
    if source:
        model = _saved_model(source, codec_id)
        text = load_text_ids(source)
        model_k = model.config.num_codebooks
        if not resume:
            model.config.text_align = args.text_align     # the layout may change (the weights do not depend on it)
            print(f"[lm] starting from {args.init} ({model.config.text_align} text)")
    started = bool(source)
    ear = None
    if started and model.config.reads_ear:
        ear = model.config.ear_config
    elif not resume and args.ear:
        from voice.speechlm.whisper_ear import EarConfig

        ear = EarConfig(chunk=args.ear_chunk, context=args.ear_context)
    encoder = None if started else _ear_or_codes_encoder(args.hearing_encoder, ear)
    aligned = (model.config.text_align if started else args.text_align) == "words"
    train_set = load_dialogues(Path(args.corpus), codec_id, ("train",), model_k, variants=args.user_variants, ear=ear,
                               word_timings=aligned)
    for extra in args.extra_corpus:      # only their train splits: held-out voices and phrasings stay held out
        more = load_dialogues(Path(extra), codec_id, ("train",), model_k, variants=args.user_variants, ear=ear,
                              word_timings=aligned)
        if not more:
            raise SystemExit(f"--extra-corpus {extra}: no tokenized training dialogues there")
        train_set += [replace(d, dialogue_id=f"{Path(extra).name}/{d.dialogue_id}") for d in more]
    if remake:
        text = load_text_ids(args.init)
    elif not started:
        tokenizer = load_tokenizer(args.base or args.tokenizer)
        kept = None
        if (args.text_vocab or ("full" if args.base else "corpus")) == "corpus":
            if args.base:
                raise SystemExit("--text-vocab corpus is for a model trained from scratch (a --base keeps its vocabulary)")
            texts = [t.text for d in train_set for t in d.turns] + [d.context for d in train_set]
            if cfg.typed_batch_size:
                from voice.speechlm.typed import typed_texts

                texts += typed_texts(2000)
            kept = choose_ids(tokenizer, texts)
        text = TextIds(tokenizer, kept)
    if not started:
        delays = [int(d) for d in args.delays.split(",")] if args.delays else [0] + [1] * (k - 1)
        hearing = ear
        if encoder is not None:
            hearing = (ear, encoder) if ear else encoder
        model = build_model(preset_model, text, codec, codec_id, k, delays, args.text_lead, args.base,
                            args.heard_codebooks, hearing, args.hearing_input, args.text_align, args.heard_text)
        if args.heard_text:       # what it hears is snapped to these words (voice.speechlm.lexicon)
            from voice.speechlm.lexicon import training_words

            model.config.heard_words = training_words(Path(args.corpus))
            model.config.heard_snap_by = "ctc"     # by the encoder's posteriors (chosen on the validation split)
        if remake:
            taken, new = take_weights(model, _saved_model(args.init, codec_id))
            print(f"[lm] a new model from {args.init}: {taken} of its weights taken, {len(new)} new ({', '.join(new[:6])}"
                  f"{', ...' if len(new) > 6 else ''})")
    vocab, layout = model.config.vocab, model.config.layout
    k = model.config.num_codebooks
    with_variants = sum(bool(d.user_variants) for d in train_set)
    if args.user_variants and not with_variants:
        raise SystemExit(f"no voice variants cached: run `voice codec tokenize --corpus {args.corpus} --user-variants N`")
    val_set = load_dialogues(Path(args.corpus), codec_id, ("validation",), k, ear=ear, word_timings=aligned) or train_set[:64]
    if model.config.heard_text and not cfg.typed_only:     # (the brain alone reads no corpus turn)
        from voice.speechlm.heard import attach_heard

        attach_heard(train_set + val_set, model.speller)
    elif args.heard_text:
        raise SystemExit("--heard-text is set when a model is made: the model resumed or started from reads none")
    mix = json.loads(args.mix) if args.mix else None
    rank = int(os.environ.get("RANK", "0"))        # under torchrun each process draws its own examples
    ear_mask = None
    if args.ear_mask:
        if not model.config.reads_ear:
            raise SystemExit("--ear-mask masks the Whisper ear's features: train with --ear")
        from voice.speechlm.data import EarMask

        ear_mask = EarMask()
    heard_snap = training_snapper(model.config, args)
    stream = ExampleStream(train_set, vocab, layout, text.encode, mix, cfg.max_steps_per_example, seed=cfg.seed + rank,
                           ear_mask=ear_mask, heard_noise=args.heard_noise if model.config.heard_text else 0.0,
                           heard_snap=heard_snap)
    if cfg.typed_only:      # the brain is validated on typed dialogues of the validation phrasings
        if not cfg.typed_batch_size:
            raise SystemExit("--typed-only learns from typed dialogues: give --typed-batch N")
        val_stream = typed_stream_for(cfg, model, text, args, seed=1234, split="validation")
    else:
        val_stream = ExampleStream(val_set, vocab, layout, text.encode, mix, cfg.max_steps_per_example, seed=1234)
    val_items = [val_stream.sample()[1] for _ in range(cfg.eval_examples)]
    val_batches = [collate(val_items[i:i + cfg.batch_size], vocab) for i in range(0, len(val_items), cfg.batch_size)]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[lm] {len(train_set)} train / {len(val_set)} validation dialogues; model {n_params / 1e6:.1f} M "
          f"parameters, K={k}, delays {model.config.delays}, lead {model.config.text_lead}, text {model.config.text_align}, "
          f"hears {model.config.heard_codebooks or k} codebooks"
          f"{' and a hearing encoder' if model.hearing is not None else ''}"
          f"{' and the Whisper ear' if model.config.reads_ear else ''}"
          f"{' (masked in training)' if ear_mask else ''}"
          f"{f' and reads its spelling (noise up to {args.heard_noise:.2f})' if model.config.heard_text else ''}"
          f"{' snapped to its words' if heard_snap is not None else ''}; "
          f"{with_variants} dialogues with voice variants"
          f"{f'; {cfg.typed_batch_size} new typed dialogues per step' if cfg.typed_batch_size else ''}"
          f"{' and nothing else (the brain alone)' if cfg.typed_only else ''}; out {out}", flush=True)
    typed_stream = typed_stream_for(cfg, model, text, args, seed=cfg.seed + rank) if cfg.typed_batch_size else None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    metrics = train(out, model, text.tokenizer, stream, val_batches, cfg, device, typed_stream)
    print(json.dumps(metrics))
    return 0


def training_snapper(config, args: argparse.Namespace):
    """With --snap-noise: the model's heard words as a spelling snapper for the training text (None without)."""
    if not args.snap_noise:
        return None
    if not (config.heard_text and config.heard_words):
        raise SystemExit("--snap-noise snaps heard text to the model's heard words: a --heard-text model has them")
    from voice.speechlm.lexicon import WordSnapper

    return WordSnapper(config.heard_words, config.heard_snap)


def typed_stream_for(cfg, model, text, args: argparse.Namespace, seed: int, split: str = "train"):
    """New typed dialogues of `split`'s phrasings, written as the model reads them: spelled in part for a
    model that reads heard text (snapped with --snap-noise), and for the brain alone (it may go into one)."""
    from voice.speechlm.typed import TypedDialogueStream

    spelled = {"spelled": args.typed_spelled, "noise": args.heard_noise, "snap": training_snapper(model.config, args)}
    return TypedDialogueStream(model.config.vocab, model.config.layout, text.encode, cfg.max_steps_per_example, seed=seed,
                               split=split, **(spelled if model.config.heard_text or cfg.typed_only else {}))


def _ear_or_codes_encoder(path: str | None, ear):
    """The frozen encoder of `--hearing-encoder` (None without one), checked against the model's ear: an ear
    encoder goes with --ear, trained on rows of the same chunks; an encoder of codes goes without it."""
    if not path:
        return None
    from voice.speechlm.hearing import HearingEncoder

    if not Path(path).exists():
        raise SystemExit(f"--hearing-encoder {path}: no such file or folder")
    encoder = HearingEncoder.load(Path(path))
    if encoder.config.reads_features != bool(ear):
        raise SystemExit("--hearing-encoder: an ear encoder (voice train hearing --ear) goes with --ear, "
                         "an encoder of codes without it")
    if ear:
        from voice.speechlm.ear_cache import ear_id

        if encoder.config.codec_id != ear_id(ear):     # its rows must come from the same chunks
            raise SystemExit(f"--hearing-encoder: trained on the ear's {encoder.config.codec_id} rows, this model "
                             f"hears {ear_id(ear)} (train it with the same --ear-chunk and --ear-context)")
    return encoder


def _saved_model(folder, codec_id: str):
    """A saved speech LM to train on (float32); it must have been trained on the codes of `codec_id`."""
    import torch

    from voice.speechlm.model import SpeechLM

    model = SpeechLM.from_pretrained(folder, dtype=torch.float32)
    if model.config.codec_id != codec_id:
        raise SystemExit(f"{folder} was trained on codes of {model.config.codec_id}, not {codec_id}")
    return model


FROZEN_ENCODERS = ("ear_encoder.", "hearing.")    # state-dict prefixes of the frozen hearing encoders


PER_CODEBOOK = ("audio_proj", "audio_none", "codebooks", "audio_head.weight")   # rows codebook by codebook


def take_weights(model, source) -> tuple[int, list[str]]:
    """Copy into `model` every tensor of `source` with the same name and shape, except the frozen hearing
    encoder's (the model was made with the one given to --hearing-encoder: an encoder of the same shape in
    `source` must not overwrite it); returns (how many, the names of the model's tensors that stay new).
    A model of fewer codebooks (of the same size) takes the first codebooks' rows of the per-codebook
    tensors (their embeddings and head rows). Both must have the same text ids."""
    import torch

    if list(source.config.text_token_ids or []) != list(model.config.text_token_ids or []):
        raise SystemExit("--init has other text ids than the model made from it")
    fewer = (model.config.num_codebooks < source.config.num_codebooks
             and model.config.codebook_size == source.config.codebook_size)
    theirs = source.state_dict()
    taken, new = 0, []
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.startswith(FROZEN_ENCODERS):
                continue
            if name in theirs and theirs[name].shape == tensor.shape:
                tensor.copy_(theirs[name])
                taken += 1
            elif (fewer and name in PER_CODEBOOK and name in theirs and theirs[name].shape[1:] == tensor.shape[1:]
                  and theirs[name].shape[0] > tensor.shape[0]):
                tensor.copy_(theirs[name][: tensor.shape[0]])
                taken += 1
            else:
                new.append(name)
    return taken, new


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float, default=0.0, help="the words' sampling temperature (0: greedy)")
    p.add_argument("--top-k", type=int, default=0, help="sample the words among the k likeliest (0: all)")
    p.add_argument("--audio-temperature", type=float, default=None,
                   help="the codes' sampling temperature (default: the words')")
    p.add_argument("--audio-top-k", type=int, default=None, help="sample the codes among the k likeliest (default: the words')")


def sampling_from_args(args: argparse.Namespace):
    from voice.speechlm.generate import Sampling

    return Sampling(temperature=args.temperature, top_k=args.top_k, audio_temperature=args.audio_temperature,
                    audio_top_k=args.audio_top_k)


def real_speech_dir(arg: str) -> Path:
    from voice.assets import speech_dir

    return Path(arg) if arg else speech_dir()


def _eval(args: argparse.Namespace) -> int:
    from voice.speechlm.evaluate import run_eval

    out = run_eval(Path(args.checkpoint), Path(args.corpus), args.codec, args.limit, args.hearing_limit,
                   args.speed, Path(args.worst) if args.worst else None, args.threads,
                   real_speech_dir(args.real_speech) if args.real_speech is not None else None, args.real_limit,
                   args.split, args.text_limit, args.speak_limit, args.speed_threads, sampling_from_args(args),
                   snap_heard=not args.no_snap, snap_by=args.snap_by, think=not args.no_think)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for row in out.get("speed", []):
        print(f"speed: {row['sessions']} session(s): {row['x_real_time']}x real time ({row['ms_per_step']} ms per "
              f"step), first answer frame {row['first_frame_ms']} ms after the user's last frame"
              + (f" (median of {row['first_frame_turns']} turns, {row['first_frame_ms_min']}-{row['first_frame_ms_max']})"
                 if "first_frame_turns" in row else "") + f"; torch threads {row['torch_threads']}")
    if "answers" in out:
        a = out["answers"]
        print(f"answers (n={a['n']}): spoken {a['spoken_accuracy']:.1%}, text stream {a['text_accuracy']:.1%}, "
              f"answer audio WER against its own text {a['speaking_wer']:.1%}")
        for name in ("per_intent", "per_voice"):
            for key, g in a[name].items():
                print(f"  {key:<28} n={g['n']:<4} spoken {g['spoken']:.0%}  text {g['text']:.0%}  "
                      f"speaking WER {g['speaking_wer']:.0%}")
    if "hearing" in out:
        h = out["hearing"]
        print(f"hearing ({out['split']} split, speech -> text, n={h['n']}): WER {h['wer']:.1%}, CER {h['cer']:.1%}; "
              + ", ".join(f"{v} {w:.0%}" for v, w in h["per_voice"].items())
              + (f"; what it read, its encoder's spelling: WER {h['spelled_wer']:.1%}" if "spelled_wer" in h else ""))
    if "typed" in out:
        t = out["typed"]
        print(f"typed questions ({out['split']} split, text -> text, n={t['n']}): right {t['accuracy']:.1%}; "
              + ", ".join(f"{k} {g['accuracy']:.0%}" for k, g in t["per_intent"].items()))
        for row in t["wrong"][:5]:
            print(f"  typed, wrong: {row['question']!r} -> {row['text']!r} (expected {row['expected']!r})")
    if "speaking" in out:
        sp = out["speaking"]
        print(f"speaking ({out['split']} split, text -> speech, n={sp['n']}): WER {sp['wer']:.1%} against the words asked "
              f"for, {sp['wer_own_words']:.1%} against its own text stream; audio {sp['seconds_per_reference_second']:.2f} "
              f"s per second of the reference")
        for row in sp["examples"][:3]:
            print(f"  speaking: {row['text']!r} -> heard {row['heard']!r}")
    for row in out.get("real_speech", []):
        print(f"  real speech {row['file']}: text {row['text']!r}, heard {row['heard']!r} ({row['seconds']} s)")
    for row in out.get("worst", []):
        print(f"  worst: {row['file']}: {row['intent']} expected {row['expected']!r}: text {row['text']!r}, "
              f"heard {row['heard']!r}")
    return 0


def register(subparsers, registered: dict) -> None:
    from voice.cli import command_group
    from voice.speechlm.train import PRESETS
    from voice.speechlm.whisper_ear import EarConfig

    train = command_group(subparsers, registered, "train", "train a model")
    p = train.add_parser("lm", help="train the speech LM on a corpus's token cache (resumable; torchrun for DDP)")
    p.add_argument("--corpus", default="data/corpus/v2", help="corpus folder with a token cache (voice codec tokenize)")
    p.add_argument("--typed-batch", type=int, default=None, metavar="N",
                   help="also learn from N new typed training dialogues (text -> text, generated, training "
                        "phrasings only) at every step")
    p.add_argument("--typed-only", action="store_true",
                   help="the brain first: learn only from --typed-batch N new typed dialogues per step (text steps, "
                        "no audio: all of the compute goes to the brain), validated on typed dialogues of the validation phrasings; "
                        "then train the full mix with --init from its checkpoint")
    p.add_argument("--ear-mask", action="store_true",
                   help="with --ear: SpecAugment-style time and channel masks on the ear's rows in training")
    p.add_argument("--extra-corpus", action="append", default=[], metavar="DIR",
                   help="also train on this corpus's train split (built with another --seed; repeatable); "
                        "validation comes from --corpus")
    p.add_argument("--codec", default="compact", help="the codec whose token cache to read")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="model size and recipe")
    p.add_argument("--base", default=None, help="start from a pretrained Llama-style text LM (a folder or smollm2)")
    p.add_argument("--init", default=None,
                   help="start from a saved speech LM's weights (e.g. models/speechlm), with a fresh optimizer; "
                        "--text-align may differ from its own")
    p.add_argument("--tokenizer", default="smollm2", help="tokenizer for a from-scratch model")
    p.add_argument("--text-vocab", default=None, choices=["corpus", "full"],
                   help="corpus: keep the tokenizer's first 4096 ids and those of the training texts (a smaller, "
                        "faster text head); full: every id (the default with --base)")
    p.add_argument("--out", default=None, help="run folder (default runs/lm/PRESET); resumes when it has a checkpoint")
    p.add_argument("--num-codebooks", type=int, default=8, help="codebooks the LM reads and writes (a prefix)")
    p.add_argument("--delays", default="", help="comma-separated delay per codebook (default 0,1,1,...)")
    p.add_argument("--text-lead", type=int, default=2, help="steps the answer's words start before its audio")
    p.add_argument("--text-align", default="ahead", choices=["ahead", "words"],
                   help="ahead: the answer's words first, then its audio; words: each word where its audio starts "
                        "(needs `voice data align`; docs/speechlm.md)")
    p.add_argument("--heard-codebooks", type=int, default=0,
                   help="codebooks of the user's speech the model reads (0: all K)")
    p.add_argument("--hearing-encoder", default="",
                   help="a hearing.pt (voice train hearing): the model also reads the user's frames through it, frozen "
                        "(with --ear, an ear encoder: voice train hearing --ear)")
    p.add_argument("--hearing-input", default="features", choices=["features", "chars"],
                   help="what the model reads of the hearing encoder: its features, or its character posteriors")
    p.add_argument("--ear", action="store_true",
                   help="the model also reads the user's audio through Whisper tiny.en's encoder (voice data ear's cache)")
    p.add_argument("--heard-text", action="store_true",
                   help="with --hearing-encoder: the model also reads the encoder's greedy spelling of the user's words, "
                        "written in the text stream as they are heard (docs/speechlm.md, \"Heard text\")")
    p.add_argument("--typed-spelled", type=float, default=0.5,
                   help="with --typed-batch, for a --heard-text model or --typed-only: the share of typed dialogues whose questions are written "
                        "as the encoder spells (lower case, no punctuation, --heard-noise mistakes)")
    p.add_argument("--heard-noise", type=float, default=0.25,
                   help="with --heard-text: spelling mistakes added to the training turns' heard text, at up to this "
                        "rate per character (the encoder misspells new voices more than the training voices)")
    p.add_argument("--snap-noise", action="store_true",
                   help="with a --heard-text model: the training turns' heard text (and the spelled typed questions), "
                        "after --heard-noise, snapped to the model's heard words by spelling, as the generator snaps: "
                        "wrong but real words, as it reads new voices")
    p.add_argument("--ear-chunk", type=int, default=EarConfig.chunk, help="with --ear: frames per encoder chunk")
    p.add_argument("--ear-context", type=int, default=EarConfig.context,
                   help="with --ear: frames of earlier audio a chunk's window sees")
    p.add_argument("--user-variants", action="store_true",
                   help="also train on the cached voice variants of the user's turns (voice codec tokenize --user-variants)")
    p.add_argument("--mix", default="", help='task mix as JSON, e.g. {"s2s": 0.5, "t2t": 0.1, "s2t": 0.3, "t2s": 0.1}')
    for name, kind in (("steps", int), ("batch-size", int), ("lr", float), ("threads", int), ("eval-every", int),
                       ("save-every", int), ("max-steps-per-example", int), ("data-workers", int),
                       ("hearing-weight", float), ("length-buckets", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help="override the preset")
    p.add_argument("--answer-noise", type=float, default=None,
                   help="share of the answers' codes the model reads wrong in training, their targets kept (default 0): "
                        "it learns to go on from its own mistakes, as it must in generation")
    p.add_argument("--minutes", type=float, default=None, help="stop and save after this much wall time")
    p.add_argument("--schedule", choices=("steps", "time"), default=None,
                   help="time: the learning rate decays over --minutes of wall time instead of --steps "
                        "(for a machine whose speed is not known in advance)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    p.add_argument("--fp32", action="store_true", help="float32 products (TF32 on a GPU) instead of bfloat16 autocast "
                   "(on a GPU, or on a CPU with bfloat16 matrix units: Intel AMX)")
    p.set_defaults(func=_train)

    evaluate = command_group(subparsers, registered, "eval", "evaluate a model")
    p = evaluate.add_parser("lm", help="spoken/text answer accuracy, hearing, speaking and speed on the corpus test split")
    p.add_argument("checkpoint", help="a checkpoint folder (runs/lm/cpu/checkpoint or models/speechlm)")
    p.add_argument("--corpus", default="data/corpus/v2")
    p.add_argument("--codec", default="compact")
    p.add_argument("--split", default="test", choices=["test", "validation"],
                   help="test: new voices and phrasings; validation: the training voices, new phrasings")
    p.add_argument("--limit", type=int, default=200, help="answers to evaluate (0: none)")
    p.add_argument("--hearing-limit", type=int, default=100, help="user turns to transcribe (0: none)")
    p.add_argument("--text-limit", type=int, default=0,
                   help="also ask this many questions typed (text -> text: the brain without the ears)")
    p.add_argument("--speak-limit", type=int, default=0,
                   help="also have it say this many of the split's answers (text -> speech: the voice alone)")
    p.add_argument("--speed", action="store_true", help="also measure x real time (1 and 4 sessions) and first-frame latency")
    p.add_argument("--worst", default="", help="folder for the 10 worst answers' audio and worst.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--speed-threads", type=int, default=1,
                   help="torch threads while --speed times the model, as voice serve runs it (0: --threads)")
    p.add_argument("--real-speech", nargs="?", const="", default=None,
                   help="also answer real recordings (default folder: the carried ones) and report what it says")
    p.add_argument("--real-limit", type=int, default=21, help="at most this many real recordings")
    add_sampling_args(p)
    p.add_argument("--no-snap", action="store_true",
                   help="read the heard words as spelled, not snapped to the model's training words")
    p.add_argument("--snap-by", choices=["spelling", "ctc"], default=None,
                   help="how heard words are snapped: the nearest by letters, or the likeliest under the encoder's CTC "
                        "posteriors (default: the model's heard_snap_by)")
    p.add_argument("--no-think", action="store_true",
                   help="a model that reads heard text answers in its speech block's own words, not in the words it "
                        "thinks in text first (docs/speechlm.md, \"Thinking in text\")")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_eval)
