"""User phrasings per intent: (kind, template) pairs; a phrasing id is `<intent>/<index>` into these lists."""

from __future__ import annotations

from voice.data import intents as it

# Order matters: indices are phrasing ids. Append new phrasings at the end so existing ids stay stable.
PHRASINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "add": tuple(("", t) for t in (
        "What is {a} plus {b}?", "What's {a} plus {b}?", "Add {a} and {b}.", "How much is {a} plus {b}?",
        "Can you add {a} and {b} for me?", "What do you get if you add {a} to {b}?", "{a} plus {b} equals what?",
        "What's the sum of {a} and {b}?", "Please add {a} and {b}.", "If I have {a} apples and get {b} more, how many do I have?",
        "Tell me {a} plus {b}.", "Quick question, what is {a} and {b} added together?",
    )),
    "subtract": tuple(("", t) for t in (
        "What is {a} minus {b}?", "What's {a} minus {b}?", "Subtract {b} from {a}.", "How much is {a} minus {b}?",
        "Can you take {b} away from {a}?", "What do you get if you subtract {b} from {a}?", "{a} minus {b} equals what?",
        "What's the difference between {a} and {b}?", "Please subtract {b} from {a}.",
        "If I have {a} cookies and eat {b}, how many are left?", "Tell me {a} minus {b}.", "What is {a} take away {b}?",
    )),
    "multiply": tuple(("", t) for t in (
        "What is {a} times {b}?", "What's {a} times {b}?", "Multiply {a} by {b}.", "How much is {a} times {b}?",
        "Can you multiply {a} and {b}?", "What do you get if you multiply {a} by {b}?", "{a} times {b} equals what?",
        "What's the product of {a} and {b}?", "Please multiply {a} by {b}.", "What is {a} multiplied by {b}?",
        "Tell me {a} times {b}.", "If I buy {a} boxes with {b} pens each, how many pens do I have?",
    )),
    "count": (
        ("range", "Count from {a} to {b}."), ("range", "Can you count from {a} to {b}?"),
        ("range", "Please count from {a} up to {b}."), ("range", "Count up from {a} to {b} for me."),
        ("to", "Count to {b}."), ("to", "Can you count to {b}?"), ("to", "Please count to {b}."),
        ("to", "Count from one to {b}."), ("down", "Count down from {b} to {a}."),
        ("down", "Can you count backwards from {b} to {a}?"), ("down", "Please count down from {b} to {a}."),
        ("range", "I need you to count from {a} to {b}."),
    ),
    "spell": tuple(("", t) for t in (
        "How do you spell {word}?", "Spell {word}.", "Can you spell {word} for me?", "How is {word} spelled?",
        "Please spell the word {word}.", "What's the spelling of {word}?", "Spell the word {word}, please.",
        "I need to know how to spell {word}.", "Could you spell {word}?", "How do I spell {word}?",
        "What letters are in the word {word}?", "Tell me how to spell {word}.",
    )),
    "time": tuple(("", t) for t in (
        "What time is it?", "What's the time?", "Can you tell me the time?", "Do you know what time it is?",
        "What time is it right now?", "Tell me the time, please.", "What's the current time?",
        "Could you tell me what time it is?", "Have you got the time?", "What is the time now?",
        "How late is it?", "I need to know the time.",
    )),
    "date": (
        ("date", "What's the date today?"), ("date", "What is today's date?"), ("date", "What date is it?"),
        ("date", "Can you tell me the date?"), ("weekday", "What day is it today?"),
        ("weekday", "What day of the week is it?"), ("weekday", "Which day is today?"),
        ("month", "What month is it?"), ("month", "Which month are we in?"), ("year", "What year is it?"),
        ("year", "Which year is it now?"), ("date", "Tell me today's date, please."),
    ),
    "capital": tuple(("", t) for t in (
        "What is the capital of {country}?", "What's the capital of {country}?", "Which city is the capital of {country}?",
        "Tell me the capital of {country}.", "Do you know the capital of {country}?", "What's the capital city of {country}?",
        "Name the capital of {country}.", "Can you tell me the capital of {country}?", "The capital of {country} is what?",
        "Where is the capital of {country}?", "What city is {country}'s capital?", "I'd like to know the capital of {country}.",
    )),
    "calendar": (
        ("day_after", "What day comes after {day}?"), ("day_after", "Which day is after {day}?"),
        ("day_before", "What day comes before {day}?"), ("day_before", "Which day is before {day}?"),
        ("month_after", "What month comes after {month}?"), ("month_after", "Which month follows {month}?"),
        ("month_before", "What month comes before {month}?"), ("month_before", "Which month is before {month}?"),
        ("month_days", "How many days are in {month}?"), ("month_days", "How many days does {month} have?"),
        ("ordinal_month", "What is the {ordinal} month of the year?"), ("ordinal_month", "Which month is the {ordinal} month?"),
        ("month_number", "What number month is {month}?"), ("week_days", "How many days are in a week?"),
        ("week_days", "How many days does a week have?"), ("year_months", "How many months are in a year?"),
        ("year_months", "How many months does a year have?"), ("weekend", "Is {day} a weekend day?"),
        ("weekend", "Is {day} part of the weekend?"),
    ),
    "units": tuple(("", t) for t in (
        "How many {dst} are in {n} {src}?", "Convert {n} {src} to {dst}.", "What is {n} {src} in {dst}?",
        "How many {dst} is {n} {src}?", "Can you convert {n} {src} into {dst}?", "{n} {src} is how many {dst}?",
        "Please convert {n} {src} to {dst}.", "Tell me how many {dst} there are in {n} {src}.",
        "What's {n} {src} in {dst}?", "I need {n} {src} in {dst}.", "How many {dst} make {n} {src}?",
        "Change {n} {src} to {dst}, please.",
    )),
    "smalltalk": (
        ("greeting", "Hello."), ("greeting", "Hi there."), ("greeting", "Good morning."), ("greeting", "Hey, assistant."),
        ("how_are_you", "How are you?"), ("how_are_you", "How are you doing today?"), ("how_are_you", "How's it going?"),
        ("thanks", "Thank you."), ("thanks", "Thanks a lot."), ("thanks", "Thanks for your help."),
        ("name", "What's your name?"), ("name", "Who are you?"), ("goodbye", "Goodbye."), ("goodbye", "See you later."),
        ("abilities", "What can you do?"), ("abilities", "What can you help me with?"),
    ),
    "repeat": tuple(("", t) for t in (
        "Repeat after me: {s}.", "Say this: {s}.", "Please repeat: {s}.", "Can you say {s}?",
        "Repeat this sentence: {s}.", "Say after me: {s}.", "I want you to say: {s}.", "Could you repeat this: {s}.",
        "Echo this back: {s}.", "Say the words {s}.", "Repeat the following: {s}.", "Please say: {s}.",
    )),
    "unknown": tuple(("", t) for t in (
        "Who is {person}?", "What's the weather going to be in {city} tomorrow?", "Can you explain {thing}?",
        "What should I do about {thing}?", "Who will win the next World Cup?", "What's the population of {city}?",
        "How do I fix {thing}?", "What is the meaning of life?", "What's the best movie ever made?",
        "Can you book me a table in {city}?", "What do you think about {thing}?", "How old is {person}?",
        "Where can I find cheap flights to {city}?", "What happened in the news today?",
    )),
    "followup_math": (
        ("add", "And what is that plus {b}?"), ("add", "Now add {b} to that."), ("add", "What if I add {b}?"),
        ("add", "Plus {b}?"), ("sub", "And what is that minus {b}?"), ("sub", "Now take away {b}."),
        ("sub", "Subtract {b} from that."), ("sub", "What if I take {b} away from that?"),
        ("mul", "And what is that times {b}?"), ("mul", "Now multiply that by {b}."),
        ("mul", "What's that multiplied by {b}?"), ("mul", "Times {b}?"),
    ),
    "followup_spell": tuple(("", t) for t in (
        "How do you spell that?", "Can you spell that?", "Spell that for me.", "How is that spelled?",
        "Could you spell it?", "How do I spell that?", "Please spell that.", "And how do you spell it?",
        "What's the spelling of that?", "Spell it, please.",
    )),
    "followup_repeat": tuple(("", t) for t in (
        "Can you say that again?", "Sorry, what was that?", "Could you repeat that?", "Say that again, please.",
        "Pardon?", "I didn't catch that.", "What did you say?", "Repeat that, please.", "Can you repeat the answer?",
        "Sorry, one more time?",
    )),
}

SAMPLERS: dict[str, it.Sampler] = {
    "add": it._add, "subtract": it._subtract, "multiply": it._multiply, "count": it._count, "spell": it._spell,
    "time": it._time, "date": it._date, "capital": it._capital, "calendar": it._calendar, "units": it._units,
    "smalltalk": it._smalltalk, "repeat": it._repeat, "unknown": it._unknown, "followup_math": it._followup_math,
    "followup_spell": it._followup_spell, "followup_repeat": it._followup_repeat,
}

FOLLOWUPS = ("followup_math", "followup_spell", "followup_repeat")
OPENING_INTENTS = tuple(name for name in PHRASINGS if name not in FOLLOWUPS)


def followup_allowed(intent: str, previous: it.Filled) -> bool:
    """Whether a follow-up `intent` can refer to the previous answer."""
    if intent == "followup_repeat":
        return previous.value is not None  # only answers that can be checked
    if intent == "followup_math":
        return isinstance(previous.value, int) and not isinstance(previous.value, bool) and 0 <= previous.value <= 200
    if intent == "followup_spell":
        return isinstance(previous.value, str) and previous.value.isalpha() and 3 <= len(previous.value) <= 10
    return False
