"""`voice train hearing` and `voice eval hearing`: the hearing encoder's CTC training and its character error rate.

Training reads the user turns of the corpus's train split (and their cached voice variants), never
validation or test; the checkpoint kept is the one with the best validation CER (training voices,
new phrasings). `voice eval hearing` reports CER and WER per voice on a split. Resumable: the run
folder holds `trainer.pt` (model, optimizer, step, history) and `hearing.pt` (the best so far).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voice.speechlm.lexicon import SNAP_DISTANCE


@dataclass
class Utterance:
    codes: np.ndarray        # [K, T]
    text: str
    voice: str


def user_utterances(corpus: Path, codec_id: str, split: str, num_codebooks: int, variants: bool = False) -> list[Utterance]:
    """Every user turn of `split` (with `variants`, also each cached voice variant of it)."""
    from voice.speechlm.data import load_dialogues

    out = []
    for d in load_dialogues(corpus, codec_id, (split,), num_codebooks, variants=variants):
        users = [t for t in d.turns if t.role == "user"]
        for t in users:
            out.append(Utterance(t.codes, t.text, d.voice))
        for v, codes in enumerate(d.user_variants):
            for t, c in zip(users, codes):
                out.append(Utterance(c, t.text, f"{d.voice}~{v}"))
    return out


def ear_utterances(corpus: Path, split: str, ear: str = "", speed_variants: int = 0,
                   voices: list[str] | tuple[str, ...] = ()) -> list[Utterance]:
    """Every user turn of `split` as the Whisper ear's cached features ([D, T] in `codes`), for an ear encoder;
    `ear` names the cache (an `ear_id`; default: the default EarConfig's). With `speed_variants` (train
    split only), also each turn's cached speed-perturbed copies (voice `<voice>~speed<v>`); with `voices`
    (extra voices, train split only), each turn re-spoken in them (voice `<extra voice>`)."""
    from voice.codec.tokenize import _read_index
    from voice.data.manifest import read_manifest
    from voice.speechlm.ear_cache import ear_id, extra_voice_id, load_features, variant_id
    from voice.speechlm.whisper_ear import EarConfig

    if (speed_variants or voices) and split != "train":
        raise ValueError("speed variants and extra voices are training data: only the train split has them")
    ear = ear or ear_id(EarConfig())
    caches = [(ear, None, "")] + [(variant_id(ear, v), lambda r, v=v: f"{r['voice']}~speed{v}", f" --speed-variants {v}")
                                  for v in range(1, speed_variants + 1)]
    caches += [(extra_voice_id(ear, name), lambda r, name=name: name, f" --extra-voices {name}") for name in voices]
    indexes = []
    for name, _, flags in caches:
        indexes.append(_read_index(Path(corpus) / "ear" / name))
        if not indexes[-1]:
            raise SystemExit(f"no Whisper-ear cache ({name}) in {corpus}: run `voice data ear --corpus {corpus}{flags}`")
    records = [r for r in read_manifest(corpus) if r["split"] == split and r["role"] == "user"]
    return [Utterance(load_features(corpus, index[r["id"]]).T.copy(), r["text"], voice_of(r) if voice_of else r["voice"])
            for (_, voice_of, _), index in zip(caches, indexes) for r in records if r["id"] in index]


def batches(items: list[Utterance], max_frames: int, rng: np.random.Generator) -> list[list[Utterance]]:
    """Length-sorted batches of at most `max_frames` padded frames, in random order."""
    order = sorted(range(len(items)), key=lambda i: items[i].codes.shape[1] + rng.random())
    out, cur, longest = [], [], 0
    for i in order:
        n = items[i].codes.shape[1]
        if cur and max(longest, n) * (len(cur) + 1) > max_frames:
            out.append(cur)
            cur, longest = [], 0
        cur.append(items[i])
        longest = max(longest, n)
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def collate(items: list[Utterance], k: int):
    import torch

    from voice.speechlm.hearing import char_ids

    lengths = torch.tensor([u.codes.shape[1] for u in items])
    if items[0].codes.dtype.kind == "f":                 # an ear encoder's feature rows [D, T]
        k, dtype = items[0].codes.shape[0], torch.float32
    else:
        dtype = torch.long
    codes = torch.zeros(len(items), k, int(lengths.max()), dtype=dtype)
    for i, u in enumerate(items):
        codes[i, :, : u.codes.shape[1]] = torch.from_numpy(u.codes[:k])
    labels = [torch.tensor(char_ids(u.text)) for u in items]
    return codes, lengths, labels


def ctc_loss(model, codes, lengths, labels, time_mask: int = 0, rng: np.random.Generator | None = None):
    import torch
    from torch.nn import functional as F

    feats = model(codes, lengths)
    if time_mask and rng is not None:            # SpecAugment-style: hide a few short spans of features
        keep = torch.ones(feats.shape[:2])
        for i, n in enumerate(lengths.tolist()):
            for _ in range(2):
                w = int(rng.integers(0, time_mask + 1))
                s = int(rng.integers(0, max(1, n - w)))
                keep[i, s:s + w] = 0
        feats = feats * keep[..., None]
    logp = model.ctc_logits(feats).log_softmax(-1).transpose(0, 1)              # [T, B, C]
    targets = torch.cat(labels)
    return F.ctc_loss(logp, targets, lengths, torch.tensor([len(x) for x in labels]), zero_infinity=True)


def transcribe(model, items: list[Utterance], max_frames: int = 20000, snap=None) -> list[str]:
    """Each utterance's greedy CTC spelling; with `snap` (a WordSnapper), its words snapped as the generator does."""
    import torch

    from voice.speechlm.hearing import Speller

    out = [""] * len(items)
    order = sorted(range(len(items)), key=lambda i: items[i].codes.shape[1])
    k = model.config.num_codebooks
    with torch.no_grad():
        i = 0
        while i < len(order):
            j = i + 1
            while j < len(order) and items[order[j]].codes.shape[1] * (j - i + 1) <= max_frames:
                j += 1
            chunk = [items[x] for x in order[i:j]]
            codes, lengths, _ = collate(chunk, k)
            logits = model.ctc_logits(model(codes, lengths))
            best = logits.argmax(-1)
            scored = getattr(snap, "reads_posteriors", False)       # only a snapper by the posteriors reads them
            logprobs = logits.log_softmax(-1) if scored else None
            for row, x in enumerate(order[i:j]):
                speller, n = Speller(snap), int(lengths[row])
                rows = logprobs[row, :n] if scored else None
                words = speller.push(best[row, :n].tolist(), rows) + speller.finish()
                out[x] = " ".join(word for _, word in words)
            i = j
    return out


def error_rates(items: list[Utterance], hyps: list[str]) -> dict:
    """CER and WER over all items and per voice."""
    import jiwer

    from voice.speechlm.hearing import normalize_chars

    refs = [normalize_chars(u.text) for u in items]
    hyps = [h or "<empty>" for h in hyps]

    def rates(idx):
        r, h = [refs[i] for i in idx], [hyps[i] for i in idx]
        return {"n": len(idx), "cer": round(float(jiwer.cer(r, h)), 4), "wer": round(float(jiwer.wer(r, h)), 4)}

    voices = sorted({u.voice for u in items})
    return {**rates(range(len(items))),
            "per_voice": {v: rates([i for i, u in enumerate(items) if u.voice == v]) for v in voices}}


def _train(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from voice.fileutil import load_trainer_state, save_trainer_state

    from voice.codec.loader import load_codec
    from voice.codec.tokenize import cache_id
    from voice.speechlm.hearing import HearingConfig, HearingEncoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = Path(args.corpus)
    if (args.ear_speed_variants or args.ear_extra_voices) and not args.ear:
        raise SystemExit("--ear-speed-variants and --ear-extra-voices are the Whisper ear's rows: train with --ear")
    if args.ear:                                     # an ear encoder: the Whisper ear's cached features
        from voice.data.voices import extra_voices
        from voice.speechlm.ear_cache import ear_id
        from voice.speechlm.whisper_ear import FEATURE_DIM, EarConfig

        if args.user_variants:
            raise SystemExit("--ear reads the Whisper ear's cache, which has no voice variants (their audio is not kept)")
        ear = ear_id(EarConfig(chunk=args.ear_chunk, context=args.ear_context))
        try:
            voices = extra_voices(args.ear_extra_voices)
        except ValueError as exc:
            raise SystemExit(str(exc)) from exc
        train_set = ear_utterances(corpus, "train", ear, args.ear_speed_variants, voices)
        val_set = ear_utterances(corpus, "validation", ear)
        config = HearingConfig(num_codebooks=0, hidden=args.hidden, gru_layers=args.gru_layers,
                               codec_id=ear, input_dim=FEATURE_DIM)
        model = HearingEncoder(config)
    else:
        codec = load_codec(args.codec)
        codec_id = cache_id(codec)
        train_set = user_utterances(corpus, codec_id, "train", args.num_codebooks, variants=args.user_variants)
        val_set = user_utterances(corpus, codec_id, "validation", args.num_codebooks)
        config = HearingConfig(num_codebooks=args.num_codebooks, codebook_size=codec.codebook_size,
                               codec_dim=int(codec.codebook_vectors().shape[-1]), hidden=args.hidden,
                               gru_layers=args.gru_layers, codec_id=codec_id)
        model = HearingEncoder(config, codec.codebook_vectors())
    if not train_set:
        raise SystemExit(f"no train-split user turns in {corpus}")
    ear_mask = None
    if args.ear_mask:
        if not args.ear:
            raise SystemExit("--ear-mask masks the Whisper ear's rows: train with --ear")
        from voice.speechlm.data import EarMask

        ear_mask = EarMask()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    step, history, best = 0, [], math.inf
    trainer = out / "trainer.pt"
    if trainer.exists():
        step, history, best = load_trainer_state(trainer, model, opt)
        print(f"[hearing] resumed at step {step} (best validation CER {best:.3f})", flush=True)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"[hearing] {len(train_set)} train / {len(val_set)} validation user turns; {n_params / 1e6:.2f} M "
          f"parameters; lookahead {config.lookahead} frames; out {out}", flush=True)
    rng = np.random.default_rng(args.seed + step)
    start, epoch_batches = time.monotonic(), []
    bar = tqdm(total=args.steps, initial=step, desc="train hearing")
    while step < args.steps:
        if not epoch_batches:
            epoch_batches = batches(train_set, args.batch_frames, rng)
        lr = args.lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        items = epoch_batches.pop()
        if ear_mask is not None:                     # SpecAugment-style masks on the ear's rows of this batch
            items = [Utterance(ear_mask.apply(u.codes.T, rng).T.copy(), u.text, u.voice) for u in items]
        loss = ctc_loss(model, *collate(items, config.num_codebooks), time_mask=args.time_mask, rng=rng)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        timed_out = args.minutes is not None and time.monotonic() - start > args.minutes * 60
        if step % args.eval_every == 0 or step == args.steps or timed_out:
            model.eval()
            rates = error_rates(val_set, transcribe(model, val_set))
            row = {"step": step, "loss": round(loss.item(), 4), "val_cer": rates["cer"], "val_wer": rates["wer"]}
            history.append(row)
            print(json.dumps(row), flush=True)
            if rates["cer"] < best:
                best = rates["cer"]
                model.save(out / "hearing.tmp", {"history": history})
                (out / "hearing.tmp").replace(out / "hearing.pt")
            save_trainer_state(trainer, model, opt, step, history, best)
            if timed_out:
                print(f"[hearing] stopped after {args.minutes} minutes at step {step}", flush=True)
                break
    bar.close()
    print(json.dumps({"step": step, "best_val_cer": best}))
    return 0


def _print_rates(title: str, rates: dict) -> None:
    print(f"{title}: CER {rates['cer']:.1%}, WER {rates['wer']:.1%}")
    for v, r in rates["per_voice"].items():
        print(f"  {v:<28} n={r['n']:<4} CER {r['cer']:.1%}  WER {r['wer']:.1%}")


def _eval(args: argparse.Namespace) -> int:
    import torch

    from voice.speechlm.hearing import HearingEncoder

    torch.set_num_threads(args.threads)
    model = HearingEncoder.load(Path(args.checkpoint))
    if model.config.reads_features:
        items = ear_utterances(Path(args.corpus), args.split, model.config.codec_id)
    else:
        items = user_utterances(Path(args.corpus), model.config.codec_id, args.split, model.config.num_codebooks)
    if args.limit:
        items = items[: args.limit]
    hyps = transcribe(model, items)
    rates = error_rates(items, hyps)
    rates["split"] = args.split
    rates["examples"] = [{"ref": u.text, "heard": h} for u, h in list(zip(items, hyps))[:5]]
    if args.snap is not None:       # each word snapped to the train split's words, as a heard-text LM reads it
        from voice.speechlm.lexicon import WordSnapper, training_words

        snap = WordSnapper(training_words(Path(args.corpus)), args.snap, args.snap_by)
        rates["snapped"] = error_rates(items, transcribe(model, items, snap=snap))
        rates["snapped"]["distance"], rates["snapped"]["by"] = args.snap, args.snap_by
    if args.json:
        print(json.dumps(rates, indent=1))
        return 0
    _print_rates(f"hearing encoder on the {args.split} split (n={rates['n']})", rates)
    if "snapped" in rates:
        _print_rates(f"snapped to the train split's words (by {args.snap_by}; distance at most {args.snap})",
                     rates["snapped"])
    for e in rates["examples"]:
        print(f"  {e['ref']!r} -> {e['heard']!r}")
    return 0


def register(subparsers, registered: dict) -> None:
    from voice.cli import command_group

    train = command_group(subparsers, registered, "train", "train a model")
    p = train.add_parser("hearing", help="train the speech LM's hearing encoder (character CTC on user turns; resumable)")
    p.add_argument("--corpus", default="data/corpus/v2")
    p.add_argument("--codec", default="compact")
    p.add_argument("--out", default="runs/hearing/cpu", help="run folder; resumes when it holds trainer.pt")
    p.add_argument("--num-codebooks", type=int, default=8, help="codebooks read (a prefix)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--gru-layers", type=int, default=2)
    p.add_argument("--user-variants", action="store_true", help="also train on the cached voice variants")
    p.add_argument("--ear", action="store_true",
                   help="an ear encoder: read the Whisper ear's features (`voice data ear`'s cache), not the codes")
    p.add_argument("--ear-mask", action="store_true", help="with --ear: time and channel masks on the ear's rows in training")
    p.add_argument("--ear-speed-variants", type=int, default=0,
                   help="with --ear: also train on this many speed-perturbed copies of each turn "
                        "(`voice data ear --speed-variants N`)")
    p.add_argument("--ear-extra-voices", default="",
                   help="with --ear: also train on the turns re-spoken in these extra voices (comma-separated, or "
                        "'all'; `voice data ear --extra-voices ...`)")
    p.add_argument("--ear-chunk", type=int, default=25, help="with --ear: the ear cache's chunk (frames)")
    p.add_argument("--ear-context", type=int, default=50, help="with --ear: the ear cache's context (frames)")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-frames", type=int, default=6000, help="padded frames per batch")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--time-mask", type=int, default=8, help="longest of two hidden feature spans per turn (0: off)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--minutes", type=float, default=None, help="stop and save after this much wall time")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_train)

    evaluate = command_group(subparsers, registered, "eval", "evaluate a model")
    p = evaluate.add_parser("hearing", help="the hearing encoder's CER and WER per voice on a corpus split")
    p.add_argument("checkpoint", help="a hearing.pt")
    p.add_argument("--corpus", default="data/corpus/v2")
    p.add_argument("--split", default="test", choices=["test", "validation", "train"])
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--snap", type=float, nargs="?", const=SNAP_DISTANCE, default=None,
                   help="also score the words snapped to the train split's words (at most this distance; "
                        "voice.speechlm.lexicon)")
    p.add_argument("--snap-by", choices=["spelling", "ctc"], default="spelling",
                   help="with --snap: the nearest known word by letters, or the likeliest under the CTC's posteriors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_eval)
