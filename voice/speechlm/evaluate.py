"""`voice eval lm`: spoken and text answers, hearing, speaking and speed of a speech LM on the corpus test split.

Every answer's codes are decoded by the codec and transcribed by Whisper tiny.en; `check_answer`
judges the transcript (spoken-answer accuracy) and the model's own words (text-stream accuracy).
Hearing is the speech -> text task's WER on the user's question; speaking is the WER of the answer
audio against the model's own text stream. Results per intent and per user voice; the worst
examples' audio goes to a folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from voice.speechlm.format import StepWriter
from voice.speechlm.generate import Sampling, SpeechGenerator

log = logging.getLogger(__name__)


@dataclass
class TurnResult:
    dialogue_id: str
    turn: int
    intent: str
    expected: str
    voice: str
    text: str                 # the model's own words
    heard: str                # Whisper on the answer audio
    text_ok: bool
    spoken_ok: bool
    speaking_wer: float
    frames: int
    audio: np.ndarray | None = None
    spelled: str = ""          # what the hearing encoder spelled of the question (a model that reads heard text)
    question: str = ""         # the question as the corpus wrote it


def _wer(ref: str, hyp: str, measure: str = "wer") -> float:
    """Word (or with measure="cer", character) error rate after the corpus's text normalisation."""
    import jiwer

    from voice.data.answers import normalize_text

    ref, hyp = normalize_text(ref), normalize_text(hyp)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(getattr(jiwer, measure)(ref, hyp))


def answer_turn(gen: SpeechGenerator, session, max_steps: int = 1200) -> tuple[list[int], np.ndarray, dict]:
    """Generate one spoken answer; returns text ids, codes [K, T] and timings (first frame, steps)."""
    t0 = time.perf_counter()
    out = gen.begin_answer(session)
    first_frame_s = None
    words, frames, steps = [], [], 1
    while True:
        words += out.text_ids
        if out.frames is not None:
            frames.append(out.frames)
            if first_frame_s is None:
                first_frame_s = time.perf_counter() - t0
        if out.done or steps >= max_steps:
            break
        out = gen.step([session])[0]
        steps += 1
    codes = np.concatenate(frames, 1) if frames else np.zeros((gen.vocab.num_codebooks, 0), np.int64)
    return words, codes, {"first_frame_s": first_frame_s, "steps": steps, "seconds": time.perf_counter() - t0}


@contextlib.contextmanager
def _fresh_session(gen: SpeechGenerator):
    """A session with an empty context, closed afterwards."""
    session = gen.open()
    try:
        yield session
    finally:
        gen.close(session)


def _heard(codec, whisper, codes: np.ndarray) -> tuple[np.ndarray, str]:
    """The answer's codes decoded, and Whisper's transcript of them ("" for less than 0.1 s)."""
    from voice.codec.evaluate import transcribe

    audio = codec.decode(codes) if codes.shape[1] else np.zeros(0, np.float32)
    return audio, (transcribe(whisper, audio) if audio.size > 1600 else "")


def _history(gen, session, dialogue, upto: int, tokenize) -> None:
    """Prefill the context and the reference turns before user turn `upto` (teacher-forced history)."""
    gen.feed_text(session, "context", tokenize(dialogue.context))
    users = 0
    for turn in dialogue.turns:
        if turn.role == "user":
            if users == upto:
                gen.feed_user_speech(session, turn.codes, features=turn.ear)
                return
            users += 1
            gen.feed_user_speech(session, turn.codes, features=turn.ear)
        else:
            w = StepWriter(gen.vocab, gen.layout, tokenize)
            w.assistant_speech(turn.text, turn.codes, turn.word_starts)
            steps = w.steps()
            gen.feed_steps(session, steps.text.tolist(), steps.audio.tolist(), words=tokenize(turn.text))


def evaluate_answers(gen, codec, whisper, dialogues, text, limit: int, keep_audio: bool = True) -> list[TurnResult]:
    """`text`: the model's `voice.speechlm.text.TextIds`."""
    from tqdm import tqdm

    from voice.data.answers import check_answer

    jobs = [(d, i) for d in dialogues for i in range(len(d.intents))][:limit]
    results = []
    for dialogue, i in tqdm(jobs, desc="eval lm answers"):
        with _fresh_session(gen) as session:
            _history(gen, session, dialogue, i, text.encode)
            words, codes, _ = answer_turn(gen, session)
            spelled = " ".join(session.spelled)
        said = text.decode(words)
        audio, heard = _heard(codec, whisper, codes)
        intent, expected = dialogue.intents[i], dialogue.expected[i]
        question = [t for t in dialogue.turns if t.role == "user"][i].text
        results.append(TurnResult(dialogue.dialogue_id, i, intent, expected, dialogue.voice, said, heard,
                                  check_answer(intent, expected, said), check_answer(intent, expected, heard),
                                  _wer(said, heard), int(codes.shape[1]), audio if keep_audio else None, spelled,
                                  question))
    return results


def evaluate_text_answers(gen, dialogues, text, limit: int, questions: dict | None = None,
                          desc: str = "eval lm text answers") -> list[dict]:
    """Text -> text: the same questions typed (the t2t task), after a typed reference history.

    The model's brain without its ears: with the spoken answers it tells "does not understand the
    new phrasing" from "does not hear it". `questions`: {(dialogue_id, turn): text} typed instead of the
    corpus's question (the jobs are then those turns only), e.g. what the ears read of it."""
    from tqdm import tqdm

    from voice.data.answers import check_answer

    end = [gen.vocab.special("end_of_text")]
    jobs = [(d, i) for d in dialogues for i in range(len(d.intents))]
    jobs = [(d, i) for d, i in jobs if (d.dialogue_id, i) in questions] if questions is not None else jobs[:limit]
    rows = []
    for dialogue, i in tqdm(jobs, desc=desc):
        session = gen.open()
        try:
            gen.feed_text(session, "context", text.encode(dialogue.context))
            users = 0
            for turn in dialogue.turns:
                if turn.role == "user":
                    asked = questions[(dialogue.dialogue_id, i)] if questions is not None and users == i else turn.text
                    gen.feed_text(session, "user_text", text.encode(asked))
                    if users == i:
                        break
                    users += 1
                else:
                    gen.feed_text(session, "assistant_text", text.encode(turn.text) + end)
            said = text.decode(gen.generate_text(session, "assistant_text"))
        finally:
            gen.close(session)
        intent, expected = dialogue.intents[i], dialogue.expected[i]
        rows.append({"dialogue_id": dialogue.dialogue_id, "turn": i, "intent": intent, "expected": expected,
                     "question": asked, "text": said, "ok": check_answer(intent, expected, said)})
    return rows


def evaluate_speaking(gen, codec, whisper, dialogues, text, limit: int) -> list[dict]:
    """Text -> speech: the model says each of the split's assistant answers (the t2s task, nothing heard, nothing
    to think): Whisper's WER of the audio against the words asked for and against the model's own text stream.
    The voice without the brain and the ears."""
    from tqdm import tqdm

    rows = []
    answers = [(d, t) for d in dialogues for t in d.turns if t.role == "assistant"][:limit]
    for dialogue, turn in tqdm(answers, desc="eval lm speaking"):
        with _fresh_session(gen) as session:
            gen.feed_text(session, "context", text.encode(""))
            gen.feed_text(session, "speak", text.encode(turn.text))
            words, codes, _ = answer_turn(gen, session)
        said = text.decode(words)
        audio, heard = _heard(codec, whisper, codes)
        rows.append({"text": turn.text, "said": said, "heard": heard, "wer": _wer(turn.text, heard),
                     "wer_own_words": _wer(said, heard), "seconds": round(audio.size / codec.sample_rate_hz, 2),
                     "reference_seconds": round(turn.codes.shape[1] * 0.02, 2)})
    return rows


def evaluate_hearing(gen, dialogues, text, limit: int) -> list[dict]:
    """Speech -> text: the model transcribes each user turn; WER against the corpus text."""
    from tqdm import tqdm

    rows = []
    users = [(d, t) for d in dialogues for t in d.turns if t.role == "user"][:limit]
    for dialogue, turn in tqdm(users, desc="eval lm hearing"):
        with _fresh_session(gen) as session:
            gen.feed_text(session, "context", text.encode(""))
            gen.feed_user_speech(session, turn.codes, features=turn.ear)
            words = gen.generate_text(session, "transcribe")
            spelled = " ".join(session.spelled)
        hyp = text.decode(words)
        rows.append({"voice": dialogue.voice, "ref": turn.text, "hyp": hyp, "wer": _wer(turn.text, hyp),
                     "cer": _wer(turn.text, hyp, "cer"), **({"spelled": spelled} if gen.cfg.heard_text else {})})
    return rows


def evaluate_real_speech(gen, codec, whisper, text, speech_dir: Path, limit: int = 21) -> list[dict]:
    """Real recordings (no questions of the corpus's domain): what the model says to each, heard by Whisper."""
    import datetime as dt

    import soundfile as sf

    from voice.cascade.conversation import clock_text
    from voice.codec.evaluate import transcribe

    context = clock_text(dt.datetime(2026, 12, 2, 15, 30))
    rows = []
    for path in sorted(Path(speech_dir).glob("*.wav"))[:limit]:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        codes = codec.encode(audio.T, rate)
        pcm = _pcm16k(audio.mean(1), rate) if gen.cfg.reads_ear else None
        session = gen.open()
        try:
            gen.feed_text(session, "context", text.encode(context))
            gen.feed_user_speech(session, codes[: gen.vocab.num_codebooks], pcm=pcm)
            words, answer, _ = answer_turn(gen, session)
        finally:
            gen.close(session)
        pcm = codec.decode(answer) if answer.shape[1] else np.zeros(0, np.float32)
        rows.append({"file": path.name, "text": text.decode(words),
                     "heard": transcribe(whisper, pcm) if pcm.size > 1600 else "", "seconds": round(pcm.size / codec.sample_rate_hz, 2)})
    return rows


def _pcm16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """Mono float audio at 16 kHz, what the Whisper ear reads."""
    from voice.audio import resample
    from voice.speechlm.whisper_ear import SAMPLE_RATE_HZ

    audio = np.asarray(audio, np.float32)
    return audio if rate == SAMPLE_RATE_HZ else resample(audio, rate, SAMPLE_RATE_HZ)


def measure_speed(gen: SpeechGenerator, dialogue, tokenize, sessions: int, answer_steps: int = 150,
                  pcm: np.ndarray | None = None) -> dict:
    """x real time of answer steps (frames of 20 ms per second of compute), for `sessions` sessions batched,
    and ms from the user's last frame to the first answer frame (one session). A model that reads the
    Whisper ear hears the turn's audio (`pcm`, 16 kHz): the ear's last chunk is in the first-frame time."""
    user = next(t for t in dialogue.turns if t.role == "user")
    cut = user.codes.shape[1] - 2
    head = tail = None
    if gen.cfg.reads_ear:
        if pcm is None:
            raise ValueError("a model that reads the Whisper ear needs the turn's audio to be timed")
        from voice.speechlm.whisper_ear import FRAME_SAMPLES

        head, tail = pcm[: cut * FRAME_SAMPLES], pcm[cut * FRAME_SAMPLES:]
    opened = [gen.open() for _ in range(sessions)]
    try:
        for s in opened:
            gen.feed_text(s, "context", tokenize(dialogue.context))
            gen.feed_user_speech(s, user.codes[:, :cut], pcm=head)
        t0 = time.perf_counter()
        gen.feed_user_speech(opened[0], user.codes[:, cut:], pcm=tail)  # the last 40 ms arrive; then the answer starts
        out = gen.begin_answer(opened[0])
        while out.frames is None and not out.done:
            out = gen.step([opened[0]])[0]
        first_ms = (time.perf_counter() - t0) * 1000
        for s in opened[1:]:
            gen.feed_user_speech(s, user.codes[:, cut:], pcm=tail)
            gen.begin_answer(s)
        # force long answers for the timing: steps run whatever the model says (a done session still steps)
        t0 = time.perf_counter()
        for _ in range(answer_steps):
            for s in opened:
                s.answer.done = False
                s.answer.frames_end = None
            gen.step(opened)
        seconds = time.perf_counter() - t0
    finally:
        for s in opened:
            gen.close(s)
    audio_s = answer_steps * 0.02
    return {"sessions": sessions, "x_real_time": round(audio_s / seconds, 2),
            "ms_per_step": round(seconds / answer_steps * 1000, 2), "first_frame_ms": round(first_ms, 1)}


FIRST_FRAME_TURNS = 8     # the first frame of one turn varies with where its end falls (the ear's chunks): time several


def first_frame_over_turns(gen: SpeechGenerator, dialogues, tokenize, turn_pcm) -> dict:
    """`measure_speed`'s one-session first answer frame, timed on the first user turn of each dialogue: its
    median (the headline `first_frame_ms`), its range and how many turns."""
    times = [measure_speed(gen, d, tokenize, 1, answer_steps=1, pcm=turn_pcm(d))["first_frame_ms"] for d in dialogues]
    return {"first_frame_ms": round(float(np.median(times)), 1), "first_frame_ms_min": min(times),
            "first_frame_ms_max": max(times), "first_frame_turns": len(times)}


def _group(results: list[TurnResult], key) -> dict:
    groups = defaultdict(list)
    for r in results:
        groups[key(r)].append(r)
    return {k: {"n": len(v), "spoken": round(np.mean([r.spoken_ok for r in v]), 3),
                "text": round(np.mean([r.text_ok for r in v]), 3),
                "speaking_wer": round(float(np.mean([r.speaking_wer for r in v])), 3)} for k, v in sorted(groups.items())}


def report(results: list[TurnResult], hearing: list[dict], speed: list[dict], typed: list[dict] | None = None,
           speaking: list[dict] | None = None, typed_read: list[dict] | None = None) -> dict:
    out: dict = {"speed": speed}
    if speaking:
        out["speaking"] = {"n": len(speaking), "wer": round(float(np.mean([r["wer"] for r in speaking])), 3),
                           "wer_own_words": round(float(np.mean([r["wer_own_words"] for r in speaking])), 3),
                           "seconds_per_reference_second": round(float(np.sum([r["seconds"] for r in speaking])
                                                                       / max(1e-9, np.sum([r["reference_seconds"] for r in speaking]))), 3),
                           "examples": speaking[:5]}
    if typed:
        by_intent = defaultdict(list)
        for r in typed:
            by_intent[r["intent"]].append(r["ok"])
        out["typed"] = {"n": len(typed), "accuracy": round(float(np.mean([r["ok"] for r in typed])), 3),
                        "per_intent": {k: {"n": len(v), "accuracy": round(float(np.mean(v)), 3)}
                                       for k, v in sorted(by_intent.items())},
                        "wrong": [r for r in typed if not r["ok"]][:10]}
    if results:
        out["answers"] = {"n": len(results), "spoken_accuracy": round(np.mean([r.spoken_ok for r in results]), 3),
                          "text_accuracy": round(np.mean([r.text_ok for r in results]), 3),
                          "speaking_wer": round(float(np.mean([r.speaking_wer for r in results])), 3),
                          "per_intent": _group(results, lambda r: r.intent),
                          "per_voice": _group(results, lambda r: r.voice)}
    if results and all(r.spelled for r in results):
        out["reading"] = reading_report(results, typed, typed_read)
    if hearing:
        by_voice = defaultdict(list)
        for h in hearing:
            by_voice[h["voice"]].append(h["wer"])
        out["hearing"] = {"n": len(hearing), "wer": round(float(np.mean([h["wer"] for h in hearing])), 3),
                          "cer": round(float(np.mean([h["cer"] for h in hearing])), 3),
                          "per_voice": {v: round(float(np.mean(w)), 3) for v, w in sorted(by_voice.items())},
                          "examples": hearing[:5]}
        if all("spelled" in h for h in hearing):     # what the model read: its encoder's own spelling
            out["hearing"]["spelled_wer"] = round(float(np.mean([_wer(h["ref"], h["spelled"]) for h in hearing])), 3)
    return out


def reading_report(results: list[TurnResult], typed: list[dict] | None = None,
                   typed_read: list[dict] | None = None) -> dict:
    """Answers grouped by how well the model read the question (a model that reads heard text): its snapped
    spelling's WER against the question. For each group: how often the text stream and the audio were right, and
    (where `typed` has the same turns) how often the same question typed was answered right, and (`typed_read`) how
    often what the ears read of it, typed, was. Tells "answers what it reads as well as what is typed" from "reads
    it and still answers it worse"."""
    typed_ok = {(r["dialogue_id"], r["turn"]): r["ok"] for r in typed or []}
    read_ok = {(r["dialogue_id"], r["turn"]): r["ok"] for r in typed_read or []}
    groups = defaultdict(list)
    for r in results:
        wer = _wer(r.question, r.spelled)
        groups["read right" if wer == 0 else "wer <= 0.2" if wer <= 0.2 else "wer > 0.2"].append(r)
    groups["all"] = results

    def summary(rows: list[TurnResult]) -> dict:
        keys = [(r.dialogue_id, r.turn) for r in rows]
        row = {"n": len(rows), "text": round(float(np.mean([r.text_ok for r in rows])), 3),
               "spoken": round(float(np.mean([r.spoken_ok for r in rows])), 3)}
        for name, ok in (("typed", typed_ok), ("read_typed", read_ok)):
            known = [ok[k] for k in keys if k in ok]
            if known:
                row[name] = round(float(np.mean(known)), 3)
        return row

    return {k: summary(groups[k]) for k in ("read right", "wer <= 0.2", "wer > 0.2", "all") if groups.get(k)}


def write_worst(results: list[TurnResult], folder: Path, sample_rate_hz: int, n: int = 10) -> list[dict]:
    """The n worst answers (wrong spoken answer first, then speaking WER): audio and a table."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    worst = sorted(results, key=lambda r: (r.spoken_ok, r.text_ok, -r.speaking_wer))[:n]
    rows = []
    for i, r in enumerate(worst):
        name = f"{i:02d}_{r.dialogue_id}_t{r.turn}.wav"
        if r.audio is not None and r.audio.size:
            sf.write(str(folder / name), r.audio, sample_rate_hz)
        rows.append({"file": name, "intent": r.intent, "expected": r.expected, "voice": r.voice, "text": r.text,
                     "heard": r.heard, "text_ok": r.text_ok, "spoken_ok": r.spoken_ok,
                     **({"spelled": r.spelled} if r.spelled else {})})
    (folder / "worst.json").write_text(json.dumps(rows, indent=1))
    return rows


def run_eval(checkpoint: Path, corpus: Path, codec_source: str, limit: int, hearing_limit: int, speed: bool,
             worst_dir: Path | None, threads: int = 2, real_speech: Path | None = None, real_limit: int = 21,
             split: str = "test", text_limit: int = 0, speak_limit: int = 0, speed_threads: int = 1,
             sampling: Sampling | None = None, snap_heard: bool = True, snap_by: str | None = None,
             think: bool = True) -> dict:
    """`speed_threads`: torch's threads while the speed is timed, as `voice serve` runs the model (1; the rest of
    the evaluation uses `threads`). `sampling`: how words and codes are chosen (default greedy). `snap_heard`: heard
    words snapped to the model's training words, as the server reads them (voice.speechlm.lexicon); `snap_by`: how
    ("spelling" or "ctc"; default: the model's own). `think`: a model that reads heard text thinks its answers in text
    first (`SpeechGenerator`'s think mode, as the server runs it); False: its speech block writes its own words."""
    import torch

    from voice.codec.evaluate import load_whisper
    from voice.codec.loader import load_codec
    from voice.codec.tokenize import cache_id
    from voice.speechlm.cli import load_text_ids
    from voice.speechlm.data import load_dialogues
    from voice.speechlm.model import SpeechLM

    torch.set_num_threads(threads)
    model = SpeechLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    text = load_text_ids(checkpoint)
    codec8 = load_codec(codec_source)
    if cache_id(codec8) != model.config.codec_id:
        raise SystemExit(f"{checkpoint} was trained on codes of {model.config.codec_id}, not of {cache_id(codec8)}")
    k = model.config.num_codebooks
    codec = load_codec(codec_source, k)
    if split not in ("test", "validation"):
        raise SystemExit(f"evaluate on the test or the validation split, not {split!r}")
    dialogues = load_dialogues(corpus, model.config.codec_id, (split,), k, ear=model.config.ear_config,
                               word_timings=model.config.text_align == "words")
    sampling = sampling or Sampling()
    gen = SpeechGenerator(model, max_sessions=4, sampling=sampling, tokenize=text.encode, snap_heard=snap_heard,
                          snap_by=snap_by, think=think and bool(model.config.heard_text))

    def turn_pcm(dialogue):     # a timed turn's audio for a model that reads the ear: its codes decoded
        if not model.config.reads_ear:
            return None
        user = next(t for t in dialogue.turns if t.role == "user")
        return _pcm16k(codec.decode(user.codes), codec.sample_rate_hz)

    speed_rows = []
    if speed:   # one untimed pass first: the first steps of a process pay for allocation and thread start-up
        timed_threads = speed_threads or threads
        torch.set_num_threads(timed_threads)
        pcm = turn_pcm(dialogues[0])
        measure_speed(gen, dialogues[0], text.encode, 1, answer_steps=20, pcm=pcm)
        speed_rows = [measure_speed(gen, dialogues[0], text.encode, n, pcm=pcm) for n in (1, 4)]
        speed_rows[0].update(first_frame_over_turns(gen, dialogues[:FIRST_FRAME_TURNS], text.encode, turn_pcm))
        for row in speed_rows:
            row["torch_threads"] = timed_threads
        torch.set_num_threads(threads)
    whisper = load_whisper()
    results = evaluate_answers(gen, codec, whisper, dialogues, text, limit) if limit else []
    hearing = evaluate_hearing(gen, dialogues, text, hearing_limit) if hearing_limit else []
    typed = evaluate_text_answers(gen, dialogues, text, text_limit) if text_limit else []
    speaking = evaluate_speaking(gen, codec, whisper, dialogues, text, speak_limit) if speak_limit else []
    typed_read = []
    if text_limit and results and all(r.spelled for r in results):     # what the ears read, typed to the brain
        typed_read = evaluate_text_answers(gen, dialogues, text, 0, {(r.dialogue_id, r.turn): r.spelled for r in results},
                                           desc="eval lm read questions typed")
    out = {"split": split, "sampling": asdict(sampling), "snap_heard": gen.snap is not None, "think": gen.think,
           "snap_by": gen.snap.by if gen.snap is not None else None,
           **report(results, hearing, speed_rows, typed, speaking, typed_read)}
    if real_speech is not None:
        out["real_speech"] = evaluate_real_speech(gen, codec, whisper, text, real_speech, real_limit)
    if worst_dir and results:
        out["worst"] = write_worst(results, worst_dir, codec.sample_rate_hz)
    return out
