"""What a soak request may legitimately answer, given what the admin ops did meanwhile.

Every ref (``name:tag``; a bare ``name`` is ``name:latest``) has a timeline of values, a
digest or ``None`` (absent), changed only by the soak's own admin calls. The mutator is
sequential, so a ref's ops never overlap; each op is known only by the window
``[start, end]`` of its HTTP call: the store's ref flips at one instant inside it. A
request resolves its ``model`` once, at one instant inside ``[sent, received]``. So the
values it may have seen are exactly the ref's values at the instants of that window:
the value before the first op overlapping it, and every value those ops set. Base-model
requests have one value, the base.

The allowed outcomes follow: a 200 whose token ids equal the quiet reference of one of
those digests (for that prompt); a 404 ``model_not_found`` if ``None`` is one of them
(for streams abandoned on purpose after the first chunk: a 200 with a chunk, or that
404). Anything else is wrong (an answer, or an error status, that no allowed value
explains: a 429 too, since the soak stays far below the in-flight limits) or lost (no HTTP
answer, a timeout, a 5xx).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

#: The value of the base model's "ref": no adapter.
BASE = "<base>"
#: A ref value: a version digest, BASE, or None (the ref does not exist).
Value = str | None


@dataclass(frozen=True)
class RefOp:
    """One admin call's effect on one ref: within [start, end] it became ``value``."""

    ref: str
    start: float
    end: float
    value: Value


class Timeline:
    """Every ref's initial value and ops, appended in time order by the one mutator."""

    def __init__(self) -> None:
        self._ops: dict[str, list[RefOp]] = {}

    def record(self, op: RefOp) -> None:
        ops = self._ops.setdefault(op.ref, [])
        if ops and op.start < ops[-1].end:
            raise ValueError(f"ops on {op.ref} overlap: the mutator must be sequential")
        ops.append(op)

    def current(self, ref: str) -> Value:
        ops = self._ops.get(ref)
        return ops[-1].value if ops else None

    def values(self) -> set[str]:
        """Every digest any ref ever had."""
        return {op.value for ops in self._ops.values() for op in ops if op.value is not None}

    def candidates(self, ref: str, sent: float, received: float) -> frozenset[Value]:
        """The values ``ref`` had at some instant of [sent, received]."""
        state: Value = None
        seen: set[Value] = set()
        for op in self._ops.get(ref, ()):
            if op.end < sent:
                state = op.value  # done before the request: its value is the start state
                continue
            if op.start > received:
                break
            seen |= {state, op.value}  # overlaps: flipped at an unknown instant inside
            state = op.value
        return frozenset(seen or {state})


class Outcome(StrEnum):
    OK = "ok"  # tokens of one allowed version
    GONE = "gone"  # 404 model_not_found while the ref was (possibly) absent
    ABORTED = "aborted"  # a stream the client dropped on purpose after its first chunk
    WRONG = "wrong"  # an answer or status no allowed value explains
    LOST = "lost"  # no answer: transport error, timeout, 5xx
    UNCHECKED = "unchecked"  # a 200 no reference could be taken for (the server died)


ALLOWED = frozenset({Outcome.OK, Outcome.GONE, Outcome.ABORTED})


@dataclass
class Record:
    """One soak request as the client saw it."""

    client: int
    ref: str  # name:tag, or BASE
    model: str  # what the request sent
    prompt: int
    stream: bool
    sent: float
    received: float
    status: int | None  # None: no HTTP answer
    token_ids: list[int] | None = None
    error_code: str | None = None
    detail: str = ""  # error text, for the report

    @property
    def latency(self) -> float:
        return self.received - self.sent


@dataclass
class Verdict:
    outcome: Outcome
    candidates: frozenset[Value]
    #: For WRONG answers: the digests (or BASE) whose reference they do match, if any;
    #: a match here means the request was served by the wrong version.
    matches_other: list[str] = field(default_factory=list)


#: (value, prompt index) -> the token ids a quiet server answered.
References = Mapping[tuple[str, int], Sequence[int]]


def judge(rec: Record, timeline: Timeline, refs: References) -> Verdict:
    cands = (
        frozenset({BASE}) if rec.ref == BASE else timeline.candidates(rec.ref, rec.sent,
                                                                       rec.received)
    )
    if rec.status is None or rec.status >= 500:
        return Verdict(Outcome.LOST, cands)
    if rec.status == 404 and rec.error_code == "model_not_found":
        return Verdict(Outcome.GONE if None in cands else Outcome.WRONG, cands)
    if rec.status != 200:
        return Verdict(Outcome.WRONG, cands)
    if rec.stream:
        # Dropped on purpose: the point is that the engine request is aborted (the leak
        # check), the tokens are not compared. A 200 for a ref that can only have been
        # absent is still wrong.
        served = cands - {None} and rec.error_code is None
        return Verdict(Outcome.ABORTED if served else Outcome.WRONG, cands)
    if any(c is not None and (c, rec.prompt) not in refs for c in cands):
        return Verdict(Outcome.UNCHECKED, cands)
    tokens = list(rec.token_ids or ())
    if any(c is not None and list(refs[(c, rec.prompt)]) == tokens for c in cands):
        return Verdict(Outcome.OK, cands)
    others = sorted(v for (v, p), ids in refs.items() if p == rec.prompt and list(ids) == tokens)
    return Verdict(Outcome.WRONG, cands, others)

