"""The shipped pretraining corpus: everyday dialogues and short narratives written from templates.

No licensed text can ship with Odyssey, so the corpus is generated: a small grammar of people, places,
errands and small talk, seeded so the file is reproducible (``python -m odyssey.select.corpus_gen``
rewrites ``data/corpus/everyday.txt``). Documents are separated by two blank lines. It is small
(a few hundred KB): enough for a tiny model to learn the domain's words and the #Person1#/#Person2#
dialogue format on a CPU in minutes, which is what the pretraining demo and tests need.
"""

from __future__ import annotations

import random
from pathlib import Path

NAMES = [
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Emma",
    "Frank",
    "Grace",
    "Henry",
    "Iris",
    "Jack",
    "Kate",
    "Leo",
    "Maria",
    "Nick",
    "Olivia",
    "Paul",
    "Rosa",
    "Sam",
    "Tina",
    "Victor",
]
PLACES = [
    "the bank",
    "the post office",
    "the library",
    "the supermarket",
    "the station",
    "the hospital",
    "the museum",
    "the park",
    "the bakery",
    "the hotel",
    "the airport",
    "the office",
    "the cinema",
    "the gym",
]
ITEMS = [
    "a ticket",
    "a book",
    "some bread",
    "a new phone",
    "a coat",
    "a birthday present",
    "some flowers",
    "a map of the city",
    "a cup of coffee",
    "a room for two nights",
    "a pair of shoes",
    "a bicycle",
]
TIMES = [
    "this morning",
    "tomorrow afternoon",
    "on Monday",
    "next week",
    "at six o'clock",
    "tonight",
    "on Friday",
    "after lunch",
    "before the meeting",
    "at the weekend",
]
FEELINGS = ["tired", "happy", "worried", "excited", "busy", "surprised", "nervous", "relieved"]
REASONS = [
    "the bus was late",
    "it was raining all day",
    "the shop was closed",
    "my phone stopped working",
    "the meeting took longer than planned",
    "there was a long queue",
    "I forgot my wallet at home",
]
JOBS = ["teacher", "doctor", "engineer", "nurse", "driver", "student", "manager", "cook", "writer", "farmer"]
WEATHER = ["sunny", "cold", "windy", "rainy", "warm", "cloudy"]


def dialogue(rng: random.Random) -> str:
    a, b = rng.sample(NAMES, 2)
    place, item, time, reason = rng.choice(PLACES), rng.choice(ITEMS), rng.choice(TIMES), rng.choice(REASONS)
    kind = rng.randrange(4)
    if kind == 0:
        turns = [
            f"Good morning, {b}. Where are you going?",
            f"I am going to {place} to buy {item}.",
            f"Can I come with you? I need to go there {time} anyway.",
            "Of course. Let's meet at the corner.",
            "Great. I will bring the list.",
        ]
    elif kind == 1:
        turns = [
            f"Excuse me, I would like {item}, please.",
            f"Certainly. Would you like it {time}?",
            "Yes, that would be perfect. How much is it?",
            f"It is {rng.randint(3, 90)} dollars.",
            "Here you are. Thank you very much.",
            "You're welcome. Have a nice day.",
        ]
    elif kind == 2:
        turns = [
            f"You look {rng.choice(FEELINGS)}, {b}. What happened?",
            f"I was late because {reason}.",
            "That is bad luck. Did you tell your manager?",
            f"Yes, I called her and she said we can talk {time}.",
            "I hope it goes well.",
        ]
    else:
        turns = [
            f"What do you do, {b}?",
            f"I am a {rng.choice(JOBS)}. And you?",
            f"I work at {place}. The weather is {rng.choice(WEATHER)} today, isn't it?",
            "Yes, it is. Shall we have lunch together?",
            f"Good idea. Let's go {time}.",
        ]
    lines = [f"#Person{1 + i % 2}#: {t}" for i, t in enumerate(turns)]
    return "\n".join(lines)


def narrative(rng: random.Random) -> str:
    a, b = rng.sample(NAMES, 2)
    place, item, time, reason = rng.choice(PLACES), rng.choice(ITEMS), rng.choice(TIMES), rng.choice(REASONS)
    sentences = [
        f"{a} went to {place} {time} to get {item}.",
        f"On the way, {a} met {b}, who works as a {rng.choice(JOBS)}.",
        f"They talked about the weather, which was {rng.choice(WEATHER)}, and about their plans for the week.",
        f"{b} said that {reason}, so the day had been long.",
        f"In the end {a} found {item} and felt {rng.choice(FEELINGS)}.",
        f"They agreed to meet again at {rng.choice(PLACES)} {rng.choice(TIMES)}.",
    ]
    keep = sorted(rng.sample(range(len(sentences)), rng.randint(4, 6)))
    return " ".join(sentences[i] for i in keep)


def generate(n_docs: int = 1500, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [dialogue(rng) if rng.random() < 0.6 else narrative(rng) for _ in range(n_docs)]


def write(path: Path | None = None, n_docs: int = 1500) -> Path:
    path = path or Path(__file__).parent / "data" / "corpus" / "everyday.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n\n".join(generate(n_docs)) + "\n", encoding="utf-8")
    return path


def corpus_dir() -> Path:
    return Path(__file__).parent / "data" / "corpus"


if __name__ == "__main__":
    print(write())
