"""Word lists the dialogue generator draws from: countries, words to spell, sentences, off-domain questions."""

from __future__ import annotations

# Country -> capital. Names chosen so that every offline TTS voice pronounces them recognisably.
CAPITALS: dict[str, str] = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi", "Russia": "Moscow", "Canada": "Ottawa",
    "Mexico": "Mexico City", "Brazil": "Brasilia", "Argentina": "Buenos Aires", "Peru": "Lima",
    "Chile": "Santiago", "Egypt": "Cairo", "Kenya": "Nairobi", "Greece": "Athens", "Turkey": "Ankara",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Poland": "Warsaw", "Austria": "Vienna", "Ireland": "Dublin", "England": "London",
    "Scotland": "Edinburgh", "Australia": "Canberra", "New Zealand": "Wellington",
    "the United States": "Washington", "South Korea": "Seoul", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "Indonesia": "Jakarta", "the Philippines": "Manila", "Cuba": "Havana",
    "Colombia": "Bogota", "Venezuela": "Caracas", "Hungary": "Budapest", "Belgium": "Brussels",
    "the Netherlands": "Amsterdam", "Switzerland": "Bern", "Iceland": "Reykjavik", "Iran": "Tehran",
    "Iraq": "Baghdad", "Israel": "Jerusalem", "Morocco": "Rabat", "Nigeria": "Abuja", "Ghana": "Accra",
    "Ukraine": "Kyiv", "Romania": "Bucharest", "Czechia": "Prague", "Pakistan": "Islamabad",
    "Bangladesh": "Dhaka", "Nepal": "Kathmandu", "Malaysia": "Kuala Lumpur", "Singapore": "Singapore",
    "Jamaica": "Kingston", "Ethiopia": "Addis Ababa",
}

# Common words for "how do you spell ...": short enough to spell aloud, unambiguous when heard.
SPELL_WORDS: tuple[str, ...] = (
    "cat", "dog", "house", "water", "apple", "green", "table", "music", "happy", "garden", "window",
    "orange", "yellow", "purple", "school", "friend", "pencil", "rabbit", "summer", "winter", "river",
    "mountain", "bread", "cheese", "coffee", "doctor", "planet", "rocket", "island", "forest", "kitchen",
    "camera", "guitar", "monkey", "tiger", "zebra", "pizza", "banana", "lemon", "sugar", "travel",
    "number", "letter", "simple", "quick", "bright", "little", "silver", "golden", "morning", "evening",
    "tomorrow", "yesterday", "weather", "family", "people", "answer", "question", "minute", "hour",
    "sister", "brother", "mother", "father", "chair", "paper", "flower", "button", "candle", "jacket",
    "ladder", "magnet", "napkin", "pillow", "puzzle", "spider", "turtle", "violin", "wallet", "basket",
)

# Sentences for "repeat after me".
REPEAT_SENTENCES: tuple[str, ...] = (
    "the cat sat on the mat", "I would like a cup of tea", "the sun is shining today",
    "please close the door", "my favorite color is blue", "the train leaves at noon",
    "we are going to the park", "it is raining outside", "the book is on the table",
    "I like to read in the evening", "the dog is sleeping", "open the window please",
    "today is a good day", "the children are playing", "I have two brothers",
    "the coffee is too hot", "let us go for a walk", "the phone is ringing",
    "she sells sea shells", "the bird is singing", "I forgot my keys", "the moon is bright tonight",
    "can you hear me now", "thank you very much", "the store opens at nine",
    "my name is written here", "he plays the piano", "the water is cold", "we need more milk",
    "the car is in the garage", "the flowers are red", "I am learning to cook",
    "the meeting starts soon", "turn on the lights", "the river flows to the sea",
    "my shoes are wet", "the bus is late again", "I like green apples", "the house has a red roof",
    "good things take time", "the movie was very long", "please speak a little slower",
    "the window is open", "I will call you later", "the cake smells wonderful",
    "the garden needs water", "we had soup for lunch", "the clock is five minutes fast",
)

# Topics for off-domain questions the assistant should politely decline.
UNKNOWN_PEOPLE: tuple[str, ...] = (
    "the mayor of my town", "my neighbor", "the tallest person alive", "the best football player",
    "the inventor of the zipper", "the richest person in the world", "the author of that book",
)
UNKNOWN_THINGS: tuple[str, ...] = (
    "quantum physics", "the stock market", "my car engine", "this rash", "bitcoin", "the election",
    "my tax return", "the lottery", "a good restaurant", "the football game", "my flight",
)
CITIES: tuple[str, ...] = (
    "Paris", "London", "Tokyo", "Chicago", "Berlin", "Sydney", "Toronto", "Madrid", "Boston", "Denver",
)

WEEKDAYS: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
MONTH_DAYS: tuple[int, ...] = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
ORDINALS: tuple[str, ...] = (
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth",
)

# Unit conversions: (from plural, to plural, factor, from singular).
UNITS: tuple[tuple[str, str, int, str], ...] = (
    ("kilometers", "meters", 1000, "kilometer"), ("meters", "centimeters", 100, "meter"),
    ("hours", "minutes", 60, "hour"), ("minutes", "seconds", 60, "minute"), ("days", "hours", 24, "day"),
    ("weeks", "days", 7, "week"), ("kilograms", "grams", 1000, "kilogram"), ("feet", "inches", 12, "foot"),
    ("liters", "milliliters", 1000, "liter"), ("yards", "feet", 3, "yard"), ("dozen", "eggs", 12, "dozen"),
    ("years", "months", 12, "year"),
)
