"""Demo task: pull a person's name, city and age out of one English sentence as JSON.

The task is synthetic so that its score is exact and cheap to compute, and so that
a base model that has never seen the answer format scores near zero while a tiny
LoRA learns it in a few dozen CPU steps: a clear, measurable "adapter does
something" demo.

The held-out split shares *no* first names and *no* sentence templates with the
training split, so a high held-out score means the adapter learned to extract
fields, not to recall sentences it was trained on. Cities and ages are shared:
they are answer values, and holding them out too would only test spelling.

Described to train.py, evaluate.py and bench/ as ``TASK`` (see ``tasks/__init__.py``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from tasks import Split, Task

# One instruction string for training, evaluation, the README and any client, so
# the adapter is always asked exactly what it was trained on.
INSTRUCTION = (
    "Extract the person's name, city and age from the sentence below. "
    'Reply with only a JSON object with the keys "name", "city" and "age".'
)

# Many first names from many languages: with few names a small adapter memorises
# them and then misspells unseen ones; with many it learns to copy the name.
_TRAIN_NAMES: tuple[str, ...] = (
    "Alice", "Bruno", "Chen", "Daria", "Emeka", "Fatima", "Gustavo", "Hana",
    "Ivan", "Jasmine", "Kenji", "Leila", "Marco", "Nadia", "Oscar", "Priya",
    "Quentin", "Rosa", "Samuel", "Tamar", "Umar", "Valentina", "Wei", "Ximena",
    "Yusuf", "Zara", "Anders", "Beatriz", "Dmitri", "Elena", "Farid", "Greta",
    "Aaliyah", "Adebayo", "Aiko", "Aleksander", "Amelia", "Anton", "Arjun", "Astrid",
    "Aurelio", "Ayesha", "Bartosz", "Bianca", "Camille", "Carlos", "Chiara", "Cyrus",
    "Dalia", "Darius", "Deepa", "Dominik", "Eduardo", "Eilidh", "Emil", "Erik",
    "Fernanda", "Finn", "Florian", "Freya", "Gabriel", "Gaurav", "Hamid", "Hugo",
    "Ilse", "Imani", "Isabel", "Jakub", "Javier", "Joaquim", "Julia", "Kai",
    "Karim", "Katarina", "Kofi", "Lars", "Leon", "Liang", "Lorenzo", "Luisa",
    "Magnus", "Malik", "Mariana", "Mateo", "Matilda", "Mehmet", "Mira", "Moritz",
    "Nasser", "Noor", "Obinna", "Paolo", "Petra", "Rafael", "Ravi", "Renata",
    "Rohan", "Saanvi", "Sakura", "Selin", "Sergei", "Sofia", "Stellan", "Sunil",
    "Svetlana", "Takeshi", "Teodora", "Thabo", "Tomas", "Ulla", "Vera", "Viktor",
    "Wiremu", "Yara", "Yuki", "Zainab", "Zoltan", "Annika", "Bilal", "Chidi",
)
# Half the training names are invented from these syllables. Real names alone
# teach a small adapter to write names it has seen; strings it cannot have seen
# teach it to copy the name from the sentence, which is what unseen names need.
_ONSETS = ("b", "ch", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "sh",
           "t", "v", "w", "y", "z", "br", "dr", "kr", "st", "tr", "")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ia", "ou", "y")
_INVENTED_SHARE = 0.5
_HELDOUT_NAMES: tuple[str, ...] = (
    "Amara", "Boris", "Chloe", "Diego", "Esther", "Felix", "Giulia", "Hiroshi",
    "Ingrid", "Jonas", "Kavya", "Lucas", "Mei", "Nikolai", "Olga", "Pablo",
    "Rania", "Sven", "Tatiana", "Ugo", "Wanjiru", "Xavier", "Yasmin", "Zeynep",
)
_CITIES: tuple[str, ...] = (
    "Lisbon", "Nairobi", "Osaka", "Toronto", "Berlin", "Lima", "Hanoi", "Oslo",
    "Cairo", "Denver", "Krakow", "Seville", "Perth", "Montreal", "Istanbul",
    "New York", "San Francisco", "Buenos Aires", "Cape Town", "Rio de Janeiro",
    "Mexico City", "Kuala Lumpur", "Tel Aviv", "Hong Kong",
)
_MIN_AGE, _MAX_AGE = 18, 89

# Sentence shapes differ in where each field sits and how the age is phrased
# ("34 years old", "aged 34", "a 34-year-old", "turned 34"), so the adapter must
# find fields by meaning rather than by position.
_TRAIN_TEMPLATES: tuple[str, ...] = (
    "{name} is {age} years old and lives in {city}.",
    "Meet {name}, a {age}-year-old from {city}.",
    "{name}, {age}, moved to {city} last spring.",
    "In {city}, {name} (age {age}) runs a small bakery.",
    "The {age}-year-old {name} works as a nurse in {city}.",
    "{city} resident {name} turned {age} this year.",
    "Aged {age}, {name} has spent most of their life in {city}.",
    "Our new volunteer is {name}, who is {age} and commutes from {city}.",
    "After retiring at {age}, {name} settled in {city}.",
    "{name} was born in {city} and is now {age}.",
)
_HELDOUT_TEMPLATES: tuple[str, ...] = (
    "{name} lives in {city} and is {age} years old.",
    "Yesterday I met {name}, who is {age} and grew up in {city}.",
    "At {age}, {name} opened a bookshop in {city}.",
    "{name} ({age}) teaches music in {city}.",
    "Now {age}, {name} still rides a bike across {city} every day.",
    "Ask {name} about {city}: the {age}-year-old has lived there for decades.",
)


@dataclass(frozen=True)
class Example:
    """One sentence and the fields the model must return for it."""

    sentence: str
    name: str
    city: str
    age: int

    @property
    def answer(self) -> str:
        """The target completion: one line of JSON, keys in a fixed order."""
        return json.dumps({"name": self.name, "city": self.city, "age": self.age})

    @property
    def expected(self) -> dict[str, object]:
        return {"name": self.name, "city": self.city, "age": self.age}


def make_examples(n: int, split: Split, seed: int = 0) -> list[Example]:
    """``n`` examples of one split; the same ``(n, split, seed)`` gives the same list."""
    if split == "train":
        names, templates = _TRAIN_NAMES, _TRAIN_TEMPLATES
    else:
        names, templates = _HELDOUT_NAMES, _HELDOUT_TEMPLATES
    # The split is part of the seed so train and held-out draws never mirror each other.
    rng = random.Random(f"{split}:{seed}")
    examples = []
    for _ in range(n):
        if split == "train" and rng.random() < _INVENTED_SHARE:
            name = _invented_name(rng)
        else:
            name = rng.choice(names)
        city = rng.choice(_CITIES)
        age = rng.randint(_MIN_AGE, _MAX_AGE)
        sentence = rng.choice(templates).format(name=name, city=city, age=age)
        examples.append(Example(sentence=sentence, name=name, city=city, age=age))
    return examples


def _invented_name(rng: random.Random) -> str:
    """A pronounceable made-up first name such as "Travoku", never a held-out name."""
    while True:
        syllables = rng.randint(2, 3)
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))
        if rng.random() < 0.4:  # names also end in consonants
            name += rng.choice(("n", "r", "l", "s", "k", "m"))
        name = name.capitalize()
        if name not in _HELDOUT_NAMES:  # e.g. "" + "u" + "g" + "o" would be "Ugo"
            return name


def user_message(sentence: str) -> str:
    return f"{INSTRUCTION}\n\nSentence: {sentence}"


def build_messages(example: Example) -> list[dict[str, str]]:
    """Chat messages for a request. No system message: the chat template adds its default
    one, and the server renders the same template, so training and serving match."""
    return [{"role": "user", "content": user_message(example.sentence)}]


def parse_answer(text: str) -> object | None:
    """The JSON value the reply consists of, or None if the reply is not JSON.

    The instruction asks for only a JSON object, and a client would ``json.loads``
    the reply, so text around the JSON makes the reply wrong. The one allowance is
    a Markdown code fence, which chat models add by habit and clients strip.
    """
    body = text.strip()
    if body.startswith("```") and body.endswith("```") and len(body) >= 6:
        body = body[3:-3].removeprefix("json").strip()
    try:
        value: object = json.loads(body)
    except json.JSONDecodeError:
        return None
    return value


def is_json_object(text: str) -> bool:
    """Whether the reply is a JSON object (the answer's form, right or wrong)."""
    return isinstance(parse_answer(text), dict)


def is_correct(example: Example, text: str) -> bool:
    # Exact: the age must be a JSON number, not "34"; no extra keys.
    return parse_answer(text) == example.expected


TASK = Task(
    name="extract_person",
    adapter="extract-person",
    card=("reads one English sentence about a person and answers with compact JSON: "
          '`{"name": ..., "city": ..., "age": ...}`. Held-out sentences use first names '
          "and sentence templates that never occur in training. A reply counts only if it "
          "parses as JSON (a Markdown code fence around it is allowed) and equals the "
          "expected object exactly, age as a number."),
    max_new_tokens=48,  # the answer is ~20 tokens
    make_examples=make_examples,
    build_messages=build_messages,
    is_correct=is_correct,
    well_formed=is_json_object,
)
