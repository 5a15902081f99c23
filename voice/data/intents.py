"""The assistant's closed domain: user phrasings per intent and the code that fills them and answers them."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Callable

from voice.data import lexicon as lx


@dataclass(frozen=True)
class Filled:
    """One sampled question: template slots, the canonical expected answer, the assistant's reply."""

    slots: dict
    expected: str  # canonical answer checked by `answers.check_answer`
    answer: str  # what the assistant says
    value: object = None  # number or word a follow-up can refer to


@dataclass(frozen=True)
class Context:
    """What the model is told as text before the dialogue (so that time answers are right at run time)."""

    now: dt.datetime
    previous: Filled | None = None  # the last exchange, for follow-ups

    @property
    def text(self) -> str:
        return f"Today is {format_date(self.now, weekday=True)}. The time is {format_time(self.now)}."


def format_time(now: dt.datetime) -> str:
    hour = now.hour % 12 or 12
    return f"{hour}:{now.minute:02d} {'AM' if now.hour < 12 else 'PM'}"


def format_date(now: dt.datetime, weekday: bool = False) -> str:
    text = f"{lx.MONTHS[now.month - 1]} {now.day}, {now.year}"
    return f"{lx.WEEKDAYS[now.weekday()]}, {text}" if weekday else text


def _num(value: int, answer: str) -> Filled:
    return Filled({}, str(value), answer, value)


# ---- samplers: (rng, kind, ctx) -> Filled -------------------------------------------------------------

def _add(rng: random.Random, kind: str, ctx: Context) -> Filled:
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    return Filled({"a": a, "b": b}, str(a + b), rng.choice(["{a} plus {b} is {r}.", "That's {r}.", "It's {r}."]).format(a=a, b=b, r=a + b), a + b)


def _subtract(rng: random.Random, kind: str, ctx: Context) -> Filled:
    a = rng.randint(1, 30)
    b = rng.randint(0, a)
    return Filled({"a": a, "b": b}, str(a - b), rng.choice(["{a} minus {b} is {r}.", "That's {r}.", "It's {r}."]).format(a=a, b=b, r=a - b), a - b)


def _multiply(rng: random.Random, kind: str, ctx: Context) -> Filled:
    a, b = rng.randint(0, 12), rng.randint(0, 12)
    return Filled({"a": a, "b": b}, str(a * b), rng.choice(["{a} times {b} is {r}.", "That's {r}.", "It's {r}."]).format(a=a, b=b, r=a * b), a * b)


def _count(rng: random.Random, kind: str, ctx: Context) -> Filled:
    if kind == "to":
        a, b = 1, rng.randint(3, 10)
    else:
        a = rng.randint(0, 15)
        b = a + rng.randint(2, 8)
    seq = list(range(b, a - 1, -1)) if kind == "down" else list(range(a, b + 1))
    spoken = ", ".join(str(n) for n in seq) + "."
    return Filled({"a": a, "b": b}, " ".join(str(n) for n in seq), spoken, seq[-1])


def _spell(rng: random.Random, kind: str, ctx: Context) -> Filled:
    word = rng.choice(lx.SPELL_WORDS)
    letters = ", ".join(word.upper())
    answer = rng.choice(["{w} is spelled {l}.", "{l}.", "It's spelled {l}."]).format(w=word.capitalize(), l=letters)
    return Filled({"word": word}, word, answer, word)


def _time(rng: random.Random, kind: str, ctx: Context) -> Filled:
    t = format_time(ctx.now)
    return Filled({}, t, rng.choice(["It's {t}.", "The time is {t}.", "It is {t} right now."]).format(t=t), t)


def _date(rng: random.Random, kind: str, ctx: Context) -> Filled:
    now = ctx.now
    if kind == "weekday":
        day = lx.WEEKDAYS[now.weekday()]
        return Filled({}, day, f"Today is {day}.", day)
    if kind == "month":
        month = lx.MONTHS[now.month - 1]
        return Filled({}, month, f"It's {month}.", month)
    if kind == "year":
        return Filled({}, str(now.year), f"It's {now.year}.", now.year)
    date = format_date(now, weekday=True)
    return Filled({}, format_date(now), f"Today is {date}.", format_date(now))


def _capital(rng: random.Random, kind: str, ctx: Context) -> Filled:
    country = rng.choice(sorted(lx.CAPITALS))
    city = lx.CAPITALS[country]
    answer = rng.choice(["The capital of {c} is {x}.", "It's {x}.", "{x} is the capital of {c}."])
    return Filled({"country": country}, city, answer.format(c=country, x=city), city)


def _calendar(rng: random.Random, kind: str, ctx: Context) -> Filled:
    d, m = rng.randrange(7), rng.randrange(12)
    day, month = lx.WEEKDAYS[d], lx.MONTHS[m]
    slots = {"day": day, "month": month, "ordinal": lx.ORDINALS[m]}
    if kind == "day_after":
        r = lx.WEEKDAYS[(d + 1) % 7]
        return Filled(slots, r, f"The day after {day} is {r}.", r)
    if kind == "day_before":
        r = lx.WEEKDAYS[(d - 1) % 7]
        return Filled(slots, r, f"The day before {day} is {r}.", r)
    if kind == "month_after":
        r = lx.MONTHS[(m + 1) % 12]
        return Filled(slots, r, f"{r} comes after {month}.", r)
    if kind == "month_before":
        r = lx.MONTHS[(m - 1) % 12]
        return Filled(slots, r, f"{r} comes before {month}.", r)
    if kind == "month_days":
        n = lx.MONTH_DAYS[m]
        extra = ", or 29 in a leap year" if m == 1 else ""
        return Filled(slots, str(n), f"{month} has {n} days{extra}.", n)
    if kind == "ordinal_month":
        return Filled(slots, month, f"The {lx.ORDINALS[m]} month is {month}.", month)
    if kind == "month_number":
        return Filled(slots, str(m + 1), f"{month} is month number {m + 1}.", m + 1)
    if kind == "week_days":
        return _num(7, "There are 7 days in a week.")
    if kind == "year_months":
        return _num(12, "There are 12 months in a year.")
    weekend = "yes" if d >= 5 else "no"
    reply = f"Yes, {day} is part of the weekend." if d >= 5 else f"No, {day} is a weekday."
    return Filled(slots, weekend, reply, None)


def _units(rng: random.Random, kind: str, ctx: Context) -> Filled:
    src, dst, factor, single = rng.choice(lx.UNITS)
    n = rng.randint(1, 9)
    src_name = single if n == 1 else src
    r = n * factor
    return Filled({"n": n, "src": src_name, "dst": dst}, f"{r} {dst}", f"{n} {src_name} is {r} {dst}.", r)


SMALLTALK_REPLIES: dict[str, tuple[str, ...]] = {
    "greeting": ("Hello! How can I help you?", "Hi there! What can I do for you?"),
    "how_are_you": ("I'm doing well, thank you for asking!", "I'm great, thanks. How can I help?"),
    "thanks": ("You're welcome!", "Happy to help!"),
    "name": ("I'm your voice assistant.", "My name is Voice, your assistant."),
    "goodbye": ("Goodbye! Have a nice day.", "Bye! Talk to you soon."),
    "abilities": ("I can do simple math, tell the time and date, spell words, and answer a few facts.",),
}


def _smalltalk(rng: random.Random, kind: str, ctx: Context) -> Filled:
    return Filled({}, kind, rng.choice(SMALLTALK_REPLIES[kind]), None)


def _repeat(rng: random.Random, kind: str, ctx: Context) -> Filled:
    s = rng.choice(lx.REPEAT_SENTENCES)
    return Filled({"s": s}, s, s[0].upper() + s[1:] + ".", s)


UNKNOWN_REPLIES = (
    "I'm sorry, I don't know that.", "Sorry, I don't know the answer to that.",
    "I'm afraid I don't know.", "I don't know, sorry. That's outside what I can answer.",
)


def _unknown(rng: random.Random, kind: str, ctx: Context) -> Filled:
    slots = {"person": rng.choice(lx.UNKNOWN_PEOPLE), "thing": rng.choice(lx.UNKNOWN_THINGS), "city": rng.choice(lx.CITIES)}
    return Filled(slots, "unknown", rng.choice(UNKNOWN_REPLIES), None)


def _followup_math(rng: random.Random, kind: str, ctx: Context) -> Filled:
    prev = int(ctx.previous.value)
    b = rng.randint(1, 10) if kind != "mul" else rng.randint(2, 5)
    if kind == "sub":
        b = rng.randint(0, prev) if prev > 0 else 0
    r = {"add": prev + b, "sub": prev - b, "mul": prev * b}[kind]
    word = {"add": "plus", "sub": "minus", "mul": "times"}[kind]
    return Filled({"b": b}, str(r), f"{prev} {word} {b} is {r}.", r)


def _followup_spell(rng: random.Random, kind: str, ctx: Context) -> Filled:
    word = str(ctx.previous.value)
    return Filled({}, word.lower(), f"{word} is spelled {', '.join(word.upper())}.", word)


def _followup_repeat(rng: random.Random, kind: str, ctx: Context) -> Filled:
    prev = ctx.previous
    return Filled({}, prev.expected, rng.choice(["Sure. ", "Of course. ", ""]) + prev.answer, prev.value)


Sampler = Callable[[random.Random, str, Context], Filled]
