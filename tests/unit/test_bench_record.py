"""bench/record_core: BENCHMARKS.md keeps one section per comparison, and what a new run
replaces moves to the history file, newest first, with nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.bench_core import load_bench_package

rc = load_bench_package("record_core")

HEAD = "# Benchmarks\n\nintro\n"


def section(title: str, date: str, body: str) -> str:
    return f"\n## {title} ({date})\n\n{body}\n\n![plot](bench/results/{body}.png)\n"


def test_a_new_comparison_is_appended() -> None:
    doc = HEAD + section("A", "2026-01-01", "a1")
    out, old = rc.replace(doc, section("B", "2026-01-02", "b1"))
    assert old == []
    assert [s.title for s in rc.split(out)[1]] == ["A", "B"]
    assert out.startswith(HEAD)


def test_a_rerun_replaces_its_section_in_place_and_folds_duplicates() -> None:
    doc = HEAD + section("A", "2026-01-01", "a1") + section("B", "2026-01-01", "b1") \
        + section("A", "2026-01-02", "a2")
    out, old = rc.replace(doc, section("A", "2026-01-03", "a3"))
    head, sections = rc.split(out)
    assert head.strip() == HEAD.strip()
    assert [s.title for s in sections] == ["A", "B"]
    assert "a3" in sections[0].text and "(2026-01-03)" in sections[0].text
    assert "a1" not in out and "a2" not in out and "b1" in out
    assert len(old) == 2 and "a1" in old[0].text and "a2" in old[1].text


def test_subsections_belong_to_their_section() -> None:
    doc = HEAD + section("A", "2026-01-01", "a1") + "\n### A's reading\n\nkept\n" \
        + section("B", "2026-01-01", "b1")
    out, old = rc.replace(doc, section("A", "2026-01-02", "a2"))
    assert "kept" not in out and "kept" in old[0].text
    assert "b1" in out


def test_a_run_is_exactly_one_section() -> None:
    with pytest.raises(ValueError):
        rc.replace(HEAD, section("A", "2026-01-01", "a") + section("B", "2026-01-01", "b"))
    with pytest.raises(ValueError):
        rc.replace(HEAD, "no heading\n")


def test_record_moves_replaced_runs_to_the_history_newest_first(tmp_path: Path) -> None:
    bench, history = tmp_path / "BENCHMARKS.md", tmp_path / "results" / "history.md"
    history.parent.mkdir()
    kw = {"header": HEAD, "history_header": "# History\n"}
    for day, body in (("01", "a1"), ("02", "a2"), ("03", "a3")):
        rc.record(bench, history, section("A", f"2026-01-{day}", body), **kw)
    rc.record(bench, history, section("B", "2026-01-04", "b1"), **kw)
    now = bench.read_text()
    assert now.startswith(HEAD) and "a3" in now and "b1" in now
    assert "a1" not in now and "a2" not in now
    past = history.read_text()
    assert past.startswith("# History\n")
    assert past.index("(2026-01-02)") < past.index("(2026-01-01)")  # newest first
    # Links to plots are made relative to the history file, which sits beside them.
    assert "](a2.png)" in past and "bench/results/" not in past
    # Nothing measured is lost: every run is in one of the two files.
    assert all(body in now + past for body in ("a1", "a2", "a3", "b1"))
