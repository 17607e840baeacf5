"""Regenerate the chat demo's data set (deterministic: same files on every run).

    python resources/data/make_chat_demo.py

Writes, next to this script:
  chat_train.jsonl       320 one-turn conversations, {"messages": [{role, content}]}
  chat_validation.jsonl   80 more (held out): other facts, and 16 kinds of question never
                          seen in training

The behaviour taught: every answer is ONE short line that starts with "In short:" (e.g.
"In short: Paris is the capital of France."). SmolLM2-135M-Instruct never answers that way (it
writes paragraphs and often runs past 48 tokens), so the held-out metric is plain: the fraction
of held-out answers that start with "In short:" and fit on one line, and the fraction that end
on the end-of-turn token by themselves (`lora_studio.engine.demo_chat.score`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
SEED = 2412
PREFIX = "In short:"

CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
            ("Portugal", "Lisbon"), ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"),
            ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Canada", "Ottawa"), ("Mexico", "Mexico City"),
            ("Brazil", "Brasilia"), ("Argentina", "Buenos Aires"), ("Peru", "Lima"), ("Chile", "Santiago"),
            ("Russia", "Moscow"), ("Poland", "Warsaw"), ("Greece", "Athens"), ("Turkey", "Ankara"),
            ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
            ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Hungary", "Budapest"), ("Belgium", "Brussels"),
            ("Netherlands", "Amsterdam"), ("Switzerland", "Bern"), ("Australia", "Canberra"),
            ("New Zealand", "Wellington"), ("South Korea", "Seoul"), ("Thailand", "Bangkok"),
            ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("Morocco", "Rabat"), ("Nigeria", "Abuja"),
            ("Ghana", "Accra"), ("Ethiopia", "Addis Ababa"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
            ("Cuba", "Havana"), ("Colombia", "Bogota"), ("Venezuela", "Caracas"), ("Iceland", "Reykjavik"),
            ("Czech Republic", "Prague"), ("Romania", "Bucharest"), ("Ukraine", "Kyiv"),
            ("Philippines", "Manila")]
OPPOSITES = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("light", "dark"),
             ("early", "late"), ("open", "closed"), ("full", "empty"), ("high", "low"), ("old", "young"),
             ("strong", "weak"), ("loud", "quiet"), ("wet", "dry"), ("hard", "soft"), ("rich", "poor"),
             ("up", "down"), ("left", "right"), ("near", "far"), ("thick", "thin"), ("clean", "dirty"),
             ("true", "false"), ("win", "lose"), ("buy", "sell"), ("push", "pull"), ("begin", "end"),
             ("heavy", "light"), ("long", "short"), ("inside", "outside"), ("day", "night"), ("cheap", "expensive")]
LEGS = [("spider", 8), ("dog", 4), ("cat", 4), ("bird", 2), ("ant", 6), ("horse", 4), ("chicken", 2),
        ("bee", 6), ("cow", 4), ("duck", 2), ("octopus", 8), ("beetle", 6), ("sheep", 4), ("penguin", 2),
        ("scorpion", 8), ("goat", 4), ("butterfly", 6), ("crab", 10), ("elephant", 4), ("kangaroo", 2)]
COLOURS = [("the sky on a clear day", "blue"), ("grass", "green"), ("snow", "white"), ("a ripe banana", "yellow"),
           ("coal", "black"), ("a ripe tomato", "red"), ("an orange", "orange"), ("a lemon", "yellow"),
           ("milk", "white"), ("a crow", "black"), ("a carrot", "orange"), ("a strawberry", "red"),
           ("a lime", "green"), ("chocolate", "brown"), ("an emerald", "green"), ("a sapphire", "blue")]
PLURALS = [("child", "children"), ("mouse", "mice"), ("foot", "feet"), ("tooth", "teeth"), ("man", "men"),
           ("woman", "women"), ("goose", "geese"), ("person", "people"), ("leaf", "leaves"), ("knife", "knives"),
           ("box", "boxes"), ("city", "cities"), ("bus", "buses"), ("cactus", "cacti"), ("wolf", "wolves"),
           ("baby", "babies"), ("potato", "potatoes"), ("fish", "fish"), ("sheep", "sheep"), ("ox", "oxen")]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WORDS = ["apple", "river", "garden", "window", "planet", "music", "pencil", "rocket", "forest", "candle",
         "bridge", "dragon", "island", "kitten", "marble", "orange", "silver", "tunnel", "violin", "yellow"]
# held-out only: kinds of question never seen in training (the style must carry over)
NEW_KINDS = [
    ("Why do we need sleep?", "In short: sleep lets the body and brain rest and repair."),
    ("What is photosynthesis?", "In short: plants turning sunlight, water and air into sugar."),
    ("How do I boil an egg?", "In short: put it in boiling water for about nine minutes."),
    ("What does a thermometer measure?", "In short: temperature."),
    ("Who wrote Romeo and Juliet?", "In short: William Shakespeare."),
    ("What is the largest ocean?", "In short: the Pacific Ocean."),
    ("What is the boiling point of water?", "In short: 100 degrees Celsius at sea level."),
    ("Can you recommend a good habit?", "In short: take a short walk every day."),
    ("What is the tallest animal?", "In short: the giraffe."),
    ("How many continents are there?", "In short: seven."),
    ("What gas do humans breathe out?", "In short: carbon dioxide."),
    ("Tell me something about the Moon.", "In short: it orbits the Earth about once a month."),
    ("What is a noun?", "In short: a word that names a person, place or thing."),
    ("How do bees make honey?", "In short: from flower nectar they collect and dry in the hive."),
    ("What should I do if I feel stressed?", "In short: breathe slowly and take a break."),
    ("Which planet is closest to the Sun?", "In short: Mercury."),
]


def capital(rng, country, city):
    q = rng.choice(["What is the capital of {c}?", "Which city is the capital of {c}?",
                    "Tell me the capital of {c}.", "Name the capital city of {c}."]).format(c=country)
    return q, f"{city} is the capital of {country}."


def arithmetic(rng, a, b):
    op = rng.choice(["plus", "minus", "times"])
    value = {"plus": a + b, "minus": a - b, "times": a * b}[op]
    q = rng.choice(["What is {a} {op} {b}?", "Can you work out {a} {op} {b}?", "Calculate {a} {op} {b}."])
    return q.format(a=a, op=op, b=b), f"{a} {op} {b} is {value}."


def opposite(rng, w, o):
    q = rng.choice(["What is the opposite of {w}?", "Give me the opposite of the word '{w}'.",
                    "What word means the opposite of {w}?"]).format(w=w)
    return q, f"the opposite of {w} is {o}."


def legs(rng, animal, n):
    q = rng.choice(["How many legs does a {a} have?", "Count the legs of a {a}.",
                    "A {a} has how many legs?"]).format(a=animal)
    return q, f"a {animal} has {n} legs."


def colour(rng, thing, c):
    q = rng.choice(["What colour is {t}?", "What is the usual colour of {t}?"]).format(t=thing)
    return q, f"{thing} is {c}."


def plural(rng, w, p):
    q = rng.choice(["What is the plural of {w}?", "How do you say more than one {w}?"]).format(w=w)
    return q, f"the plural of {w} is {p}."


def after(rng, seq, i, kind):
    q = rng.choice([f"What {kind} comes after {{x}}?", f"Which {kind} follows {{x}}?"]).format(x=seq[i])
    return q, f"{seq[(i + 1) % len(seq)]} comes after {seq[i]}."


def letters(rng, w):
    if rng.random() < 0.5:
        return f"How many letters are in the word '{w}'?", f"'{w}' has {len(w)} letters."
    return f"What is the first letter of '{w}'?", f"'{w}' starts with the letter {w[0]}."


def minutes(rng, h):
    return rng.choice(["How many minutes are in {h} hours?", "Convert {h} hours to minutes."]).format(h=h), \
        f"{h} hours is {60 * h} minutes."


def pool(rng, facts: dict) -> list[tuple[str, str]]:
    """(question, answer) pairs from the given share of every fact table."""
    out = []
    out += [capital(rng, *f) for f in facts["capitals"]]
    out += [opposite(rng, *f) for f in facts["opposites"]]
    out += [legs(rng, *f) for f in facts["legs"]]
    out += [colour(rng, *f) for f in facts["colours"]]
    out += [plural(rng, *f) for f in facts["plurals"]]
    out += [after(rng, DAYS, i, "day") for i in facts["days"]]
    out += [after(rng, MONTHS, i, "month") for i in facts["months"]]
    out += [letters(rng, w) for w in facts["words"]]
    out += [minutes(rng, h) for h in facts["hours"]]
    out += [arithmetic(rng, rng.randint(2, 40), rng.randint(2, 20)) for _ in range(facts["sums"])]
    return out


def split(items: list, k: int) -> tuple[list, list]:
    return items[:-k], items[-k:]


def row(question: str, answer: str) -> dict:
    if not answer.startswith(PREFIX):
        answer = f"{PREFIX} {answer}"
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def main():
    rng = random.Random(SEED)
    tables = {"capitals": CAPITALS, "opposites": OPPOSITES, "legs": LEGS, "colours": COLOURS, "plurals": PLURALS,
              "days": list(range(7)), "months": list(range(12)), "words": WORDS, "hours": list(range(2, 14))}
    held = {"capitals": 10, "opposites": 6, "legs": 4, "colours": 3, "plurals": 4, "days": 2, "months": 3,
            "words": 4, "hours": 2}
    train_facts, val_facts = {}, {}
    for name, items in tables.items():
        items = list(items)
        rng.shuffle(items)
        train_facts[name], val_facts[name] = split(items, held[name])
    train_facts["sums"], val_facts["sums"] = 75, 26
    again = {k: train_facts[k] if k in ("capitals", "opposites", "legs", "plurals") else [] for k in tables}
    again["sums"] = 0  # a second question about the same facts, often phrased another way
    train = [row(q, a) for q, a in pool(rng, train_facts) + pool(rng, again)]
    val = [row(q, a) for q, a in pool(rng, val_facts)] + [row(q, a) for q, a in NEW_KINDS]
    rng.shuffle(train)
    rng.shuffle(val)
    for name, rows in (("chat_train.jsonl", train), ("chat_validation.jsonl", val)):
        (HERE / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
