"""After the traffic: the quiet reference run (every version and the base model answer
every prompt, one request at a time) and the judgement of every answer against it."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx

from .config import SoakConfig, Target
from .mutator import Mutator
from .oracle import ALLOWED, BASE, Outcome, Record, References, Timeline, judge
from .result import Live
from .traffic import one_request


async def reference_run(cfg: SoakConfig, client: httpx.AsyncClient, mutator: Mutator,
                        target: Target, live: Live, failures: list[str]
                        ) -> dict[tuple[str, int], list[int]]:
    """Every (version, prompt) and (base, prompt), one request at a time."""
    ref_name = f"{cfg.prefix}-ref"
    current = {d: f"{n}:{t}" for n, st in mutator.state.items()
               for t, d in (("latest", st.latest), ("stable", st.stable)) if d is not None}
    refs: dict[tuple[str, int], list[int]] = {}
    values = sorted(mutator.timeline.values())
    for i, digest in enumerate([BASE, *values]):
        live.phase = f"reference {i + 1}/{len(values) + 1}"
        if digest == BASE:
            model = target.base_name
        elif digest in current:
            model = current[digest]
        else:
            # Deleted meanwhile: the same archive again is the same version (same digest).
            resp = await client.post("/v1/adapters", params={"name": ref_name, "tag": f"v{i}"},
                                     content=mutator.archives(mutator.seed_of[digest]),
                                     headers={"content-type": "application/octet-stream"})
            if resp.status_code != 201 or resp.json()["version"]["digest"] != digest:
                failures.append(f"reference upload of {digest[:12]}: {resp.status_code} "
                                f"{resp.text[:200]}")
                continue
            model = f"{ref_name}:v{i}"
        for p in range(len(cfg.prompts)):
            rec = Record(-1, digest, model, p, False, time.monotonic(), 0.0, None)
            await one_request(client, cfg, rec)
            if rec.status != 200 or rec.token_ids is None:
                failures.append(f"reference {model} prompt {p}: {rec.status} {rec.detail}")
                continue
            refs[(digest, p)] = rec.token_ids
    return refs


def indistinct_pairs(refs: References, prompts: int) -> int:
    by_version: dict[str, tuple[tuple[int, ...], ...]] = {}
    for d in {d for d, _ in refs}:
        if all((d, p) in refs for p in range(prompts)):
            by_version[d] = tuple(tuple(refs[(d, p)]) for p in range(prompts))
    counts = Counter(by_version.values())
    return sum(c * (c - 1) // 2 for c in counts.values())


def judge_all(records: list[Record], timeline: Timeline, refs: References
              ) -> tuple[list[Outcome], list[dict[str, Any]], int]:
    """Outcomes in record order, the first 50 not allowed (for the report), and how many
    OK answers raced an op that changed what they could get."""
    outcomes: list[Outcome] = []
    wrong: list[dict[str, Any]] = []
    raced = 0
    t0 = min((r.sent for r in records), default=0.0)
    for rec in records:
        verdict = judge(rec, timeline, refs)
        outcomes.append(verdict.outcome)
        if verdict.outcome is Outcome.OK and len(verdict.candidates) > 1:
            raced += 1
        if verdict.outcome not in ALLOWED and len(wrong) < 50:
            wrong.append({
                "outcome": verdict.outcome.value, "model": rec.model, "prompt": rec.prompt,
                "stream": rec.stream, "sent_s": round(rec.sent - t0, 3),
                "received_s": round(rec.received - t0, 3), "status": rec.status,
                "error_code": rec.error_code, "detail": rec.detail,
                "token_ids": rec.token_ids,
                "candidates": sorted(str(c) for c in verdict.candidates),
                "expected": [refs.get((c, rec.prompt)) for c in sorted(
                    str(c) for c in verdict.candidates) if c != "None"],
                "matches_other": verdict.matches_other,
            })
    return outcomes, wrong, raced
