"""The demo tasks: what each adapter in examples/adapters/ was trained to do.

Two tasks of different kinds, so that switching tasks by ``model`` name is visible:

- ``extract_person``: one sentence about a person in, one line of JSON out
  (structured extraction; adapters ``extract-person*``);
- ``route_ticket``: one customer-support message in, the team that should handle it
  out (classification; adapters ``route-ticket*``).

Each task module holds its data generator, instruction, chat messages and exact scorer
and describes itself as a :class:`Task`, which is all ``train.py``, ``evaluate.py`` and
``bench/task_quality.py`` know about it. Both tasks are synthetic so that scores are
exact and cheap, and both hold out sentence templates (and, where it means something,
names) that training never sees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Split = Literal["train", "heldout"]


class Example(Protocol):
    """What every task's example offers: the reference completion."""

    @property
    def answer(self) -> str: ...


@dataclass(frozen=True)
class Task:
    name: str
    #: Adapter directory / served name of the LoRA; other families append -<method>.
    adapter: str
    #: One paragraph for the adapter card: what the adapter reads and answers.
    card: str
    #: Ample for the answer, a cap on a rambling base model.
    max_new_tokens: int
    make_examples: Callable[[int, Split, int], Sequence[Any]]
    build_messages: Callable[[Any], list[dict[str, str]]]
    is_correct: Callable[[Any, str], bool]
    #: Whether a reply has the answer's form at all (right or wrong), where that means
    #: something: for extraction, a JSON object. None: no such check.
    well_formed: Callable[[str], bool] | None = None

    def score(self, examples: Sequence[Any], outputs: Sequence[str]) -> int:
        """Number of exact matches."""
        if len(examples) != len(outputs):
            raise ValueError(f"{len(examples)} examples but {len(outputs)} outputs")
        return sum(self.is_correct(ex, out) for ex, out in zip(examples, outputs, strict=True))

    def user_message(self, example: Any) -> str:
        return self.build_messages(example)[-1]["content"]


def load(name: str) -> Task:
    # Imported here so that each task module can import Split from this one.
    from tasks import extract_person, route_ticket

    found = {t.name: t for t in (extract_person.TASK, route_ticket.TASK)}
    if name not in found:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(found))}")
    return found[name]


NAMES = ("extract_person", "route_ticket")
