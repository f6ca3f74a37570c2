"""Demo task: route one customer-support message to the team that should handle it.

A classification task, unlike ``extract_person``'s extraction: the answer is one word
out of five (``billing``, ``shipping``, ``technical``, ``account``, ``returns``). The
base model knows what the words mean and so scores above zero when asked, but it
answers in sentences, mixes up near teams (a refund is ``returns``, a double charge
``billing``) and picks by surface words; an adapter learns the routing rules and the
one-word answer.

Messages come from templates per team filled with products, order numbers, amounts
and days. The held-out split shares *no* templates with training, so a high held-out
score means the adapter learned what each team handles, not the sentences. The
answer is compared after trimming whitespace, a trailing full stop and case, as a
client routing on it would.

Described to train.py, evaluate.py and bench/ as ``TASK`` (see ``tasks/__init__.py``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tasks import Split, Task

TEAMS = ("billing", "shipping", "technical", "account", "returns")
INSTRUCTION = (
    "Route the customer message below to one support team: billing, shipping, "
    "technical, account or returns. Reply with only the team name."
)

_PRODUCTS = (
    "wireless headphones", "coffee grinder", "standing desk", "phone case", "smart watch",
    "yoga mat", "desk lamp", "backpack", "air fryer", "mechanical keyboard", "e-reader",
    "water bottle", "router", "baby monitor", "electric kettle", "running shoes",
)
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Per team: what its messages are about, phrased many ways. Training and held-out
# templates are disjoint; several share words across teams on purpose ("order",
# "charged", "app"), so that a keyword is not enough.
_TRAIN: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice for order {order}, please fix my card statement.",
        "Why does my invoice for the {product} show ${amount} instead of the price on the site?",
        "My subscription renewed on {day} but I cancelled it last month. "
        "Who do I talk to about the charge?",
        "Can I get a VAT invoice for my purchase of ${amount}?",
        "The promo code was not applied and I paid ${amount} too much.",
        "My credit card payment keeps getting declined at checkout.",
        "I see a charge of ${amount} from you that I do not recognise.",
        "Please change the billing address on my next invoice.",
    ),
    "shipping": (
        "Order {order} was supposed to arrive on {day} and it still has not come.",
        "The tracking number for my {product} has not updated in a week.",
        "Can you deliver order {order} to my office instead of my home?",
        "The courier left my package at the wrong address.",
        "How long does delivery to Canada usually take?",
        "My {product} shows as delivered but there is nothing at my door.",
        "Is it possible to upgrade order {order} to express delivery?",
        "The box arrived crushed and soaking wet.",
    ),
    "technical": (
        "My {product} will not turn on even after charging it overnight.",
        "The app crashes every time I try to pair the {product}.",
        "After the latest firmware update the {product} keeps disconnecting.",
        "How do I reset the {product} to factory settings?",
        "The {product} makes a loud buzzing noise when it runs.",
        "Bluetooth cannot find my {product} at all.",
        "The screen on the {product} flickers after a few minutes of use.",
        "I followed the setup guide but the {product} shows error code E{code}.",
    ),
    "account": (
        "I forgot my password and the reset email never arrives.",
        "Please delete my account and all the data you hold about me.",
        "How can I change the email address on my profile?",
        "Someone logged into my account from another country on {day}.",
        "I cannot sign in, it says my account is locked.",
        "Can I merge my two accounts into one?",
        "I would like to turn off the marketing emails on my profile.",
        "My two-factor codes stopped working after I changed phones.",
    ),
    "returns": (
        "I want to send back the {product}, it is not what I expected.",
        "How do I get a refund for order {order}?",
        "The {product} I received is the wrong colour, can I exchange it?",
        "I returned the {product} two weeks ago and still have no refund.",
        "Can I return an opened {product} within 30 days?",
        "Please send me a return label for order {order}.",
        "I bought the {product} as a gift and they would like to swap it for a different size.",
        "Is the return shipping free if the {product} is faulty?",
    ),
}
_HELDOUT: dict[str, tuple[str, ...]] = {
    "billing": (
        "There are two identical payments of ${amount} on my bank app for one order.",
        "I need a receipt with my company name for the {product} I bought.",
        "You billed me for the premium plan although I am on the free one.",
        "Is there a way to pay in three instalments?",
    ),
    "shipping": (
        "Where is my parcel? Order {order} left your warehouse on {day}.",
        "Do you ship the {product} to Iceland?",
        "The delivery driver never rang the bell and took the parcel back.",
        "Could you hold order {order} until I am back from holiday on {day}?",
    ),
    "technical": (
        "The {product} gets very hot and then switches itself off.",
        "Which charger do I need for the {product}? Mine stopped charging.",
        "Since {day} the {product} will not connect to my Wi-Fi.",
        "The buttons on my {product} do nothing when I press them.",
    ),
    "account": (
        "I want to update the phone number linked to my login.",
        "Please close my profile, I no longer use your service.",
        "I keep getting logged out of the website every few minutes.",
        "Can you confirm which email my account is registered with?",
    ),
    "returns": (
        "The {product} does not fit, I would like my money back.",
        "What is the deadline for sending back order {order}?",
        "I changed my mind about the {product}, can I return it unopened?",
        "You refunded only half of order {order} after I sent everything back.",
    ),
}


@dataclass(frozen=True)
class Example:
    """One customer message and the team that should handle it."""

    message: str
    team: str

    @property
    def answer(self) -> str:
        return self.team


def make_examples(n: int, split: Split, seed: int = 0) -> list[Example]:
    """``n`` examples of one split, teams in equal shares; same arguments, same list."""
    templates = _TRAIN if split == "train" else _HELDOUT
    rng = random.Random(f"route:{split}:{seed}")
    examples = []
    for i in range(n):
        team = TEAMS[i % len(TEAMS)] if split == "heldout" else rng.choice(TEAMS)
        message = rng.choice(templates[team]).format(
            product=rng.choice(_PRODUCTS), order=rng.randint(100000, 999999),
            amount=f"{rng.randint(5, 400)}.{rng.randint(0, 99):02d}",
            day=rng.choice(_DAYS), code=rng.randint(10, 99))
        examples.append(Example(message=message, team=team))
    if split == "heldout":
        rng.shuffle(examples)  # equal shares, no pattern in the order
    return examples


def user_message(message: str) -> str:
    return f"{INSTRUCTION}\n\nMessage: {message}"


def build_messages(example: Example) -> list[dict[str, str]]:
    return [{"role": "user", "content": user_message(example.message)}]


def normalise(text: str) -> str:
    return text.strip().rstrip(".").strip().lower()


def is_correct(example: Example, text: str) -> bool:
    return normalise(text) == example.team


TASK = Task(
    name="route_ticket",
    adapter="route-ticket",
    card=("reads one customer-support message and answers with the team that should "
          "handle it: `billing`, `shipping`, `technical`, `account` or `returns`. "
          "Held-out messages use templates that never occur in training, teams in equal "
          "shares. A reply counts if, trimmed of whitespace and a final full stop and "
          "lower-cased, it is exactly the team name."),
    max_new_tokens=16,  # the answer is 1-2 tokens; room to see a base model's sentence
    make_examples=make_examples,
    build_messages=build_messages,
    is_correct=is_correct,
)
