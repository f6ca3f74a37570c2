"""A short soak on the session's server: greedy traffic from 8 clients on 8 adapters
while they are uploaded, re-tagged and deleted; every answer must be one the admin ops
around it allow (bench/soak_core/oracle.py), and no engine request may be left over.

The full soak (minutes, RSS growth judged, its own server) is ``make soak``
(bench/soak.py); both run the same core, loaded here by its path (support/soak.py).
Deterministic on a loaded machine: the scripted admin ops run whatever the timing, the
traffic stops only after them, and nothing is timed. RSS is not judged here: half a
minute on a server other tests have shaped says nothing about growth.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.server import ServerInfo
from support.soak import Archives, load_core

core = load_core()

ALLOWED = {core.Outcome.OK, core.Outcome.GONE, core.Outcome.ABORTED}


def test_oracle_windows() -> None:
    """Which versions a request may get, from the windows of the ops on its ref."""
    t = core.Timeline()
    t.record(core.RefOp("a:latest", 0.0, 1.0, "v1"))
    t.record(core.RefOp("a:latest", 5.0, 6.0, "v2"))
    t.record(core.RefOp("a:latest", 8.0, 9.0, None))
    assert t.candidates("a:latest", 2.0, 3.0) == {"v1"}  # quiet
    assert t.candidates("a:latest", 2.0, 5.5) == {"v1", "v2"}  # the move overlaps
    assert t.candidates("a:latest", 6.5, 7.0) == {"v2"}
    assert t.candidates("a:latest", 4.0, 10.0) == {"v1", "v2", None}
    assert t.candidates("a:latest", 9.5, 9.6) == {None}  # deleted: only a 404
    assert t.candidates("b:latest", 0.0, 1.0) == {None}  # never existed
    with pytest.raises(ValueError):
        t.record(core.RefOp("a:latest", 8.5, 10.0, "v3"))  # overlapping ops


def test_oracle_judges() -> None:
    t = core.Timeline()
    t.record(core.RefOp("a:stable", 0.0, 1.0, "v1"))
    t.record(core.RefOp("a:stable", 4.0, 5.0, "v2"))
    refs = {("v1", 0): [1, 2], ("v2", 0): [3, 4], ("v3", 0): [5, 6]}

    def outcome(sent: float, status: int | None, tokens: list[int] | None = None,
                code: str | None = None) -> object:
        rec = core.Record(0, "a:stable", "a:stable", 0, False, sent, sent + 0.5, status,
                          tokens, code)
        return core.judge(rec, t, refs).outcome

    assert outcome(2.0, 200, [1, 2]) is core.Outcome.OK
    assert outcome(2.0, 200, [3, 4]) is core.Outcome.WRONG  # the move is not under way
    assert outcome(4.2, 200, [3, 4]) is core.Outcome.OK  # it is: either version
    assert outcome(4.2, 200, [1, 2]) is core.Outcome.OK
    assert outcome(4.2, 200, [5, 6]) is core.Outcome.WRONG  # another version's answer
    assert outcome(2.0, 404, code="model_not_found") is core.Outcome.WRONG  # it exists
    assert outcome(2.0, 500) is core.Outcome.LOST
    assert outcome(2.0, None) is core.Outcome.LOST


@pytest.mark.engine
async def test_short_soak(server: ServerInfo, base_model_dir: Path, tmp_path: Path) -> None:
    assert server.process is not None
    target = core.Target(server.url, server.base_name, server.pid, server.headers)
    cfg = core.SoakConfig(duration_s=25, adapters=8, clients=8, prefix="soaktest",
                          mutation_every_s=1.0, check_rss=False)
    result = await core.soak(cfg, target, Archives(base_model_dir, tmp_path))
    summary = result.summary()
    # The first answers not allowed say what went wrong (candidates, expected tokens).
    assert not result.failures, "\n".join(
        [*result.failures, *(json.dumps(w) for w in result.wrong[:5])])
    assert summary["outcomes"]["ok"] > 0, summary["outcomes"]
    assert set(result.outcomes) <= ALLOWED
    # The scripted ops all ran: uploads, both tag moves, a tag and a name deleted.
    assert {"upload", "promote", "rollback", "delete_tag", "delete", "recreate"} <= set(
        summary["admin_ops"]), summary["admin_ops"]
    assert all(v == 0 for v in summary["gauges_after_traffic"].values())
    assert all(v == 0 for v in summary["gauges_after_cleanup"].values())
