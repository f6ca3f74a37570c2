"""BENCHMARKS.md keeps one section per comparison: the newest run of each. Recording a
run replaces that comparison's section where it stands; the section it replaces moves to
the top of the history file (the most recently replaced first), so no measured number is
lost.

A section is a ``## Title (YYYY-MM-DD)`` heading and everything up to the next ``## ``
heading; two sections are the same comparison when their titles match without the date.
Self-contained (stdlib only), so the tests load it without bench/'s other modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_HEADING = re.compile(r"^## (?P<title>.+?)(?: \(\d{4}-\d{2}-\d{2}\))?\s*$")


@dataclass(frozen=True)
class Section:
    #: The title without its date: what names the comparison.
    title: str
    text: str


def split(doc: str) -> tuple[str, list[Section]]:
    """(what comes before the first section, the sections in order)."""
    lines = doc.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _HEADING.match(line)]
    head = "".join(lines[:starts[0]] if starts else lines)
    sections = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        match = _HEADING.match(lines[start])
        assert match is not None
        sections.append(Section(match["title"], "".join(lines[start:end])))
    return head, sections


def _join(head: str, sections: list[Section]) -> str:
    parts = [head.rstrip("\n") + "\n"] if head.strip() else []
    parts += ["\n" + s.text.strip("\n") + "\n" for s in sections]
    return "".join(parts)


def replace(doc: str, new: str) -> tuple[str, list[Section]]:
    """``doc`` with the section ``new`` in place of every section of its comparison (at
    the first one's place; appended if there is none), and the sections it replaced."""
    head, sections = split(doc)
    _, added = split(new)
    if len(added) != 1:
        raise ValueError(f"a recorded run is one '## ' section, not {len(added)}")
    section = added[0]
    old = [s for s in sections if s.title == section.title]
    out: list[Section] = []
    for s in sections:
        if s.title != section.title:
            out.append(s)
        elif s is old[0]:
            out.append(section)
    if not old:
        out.append(section)
    return _join(head, out), old


def _from_history(text: str, results_prefix: str) -> str:
    """A section's links as seen from the history file, next to the plots."""
    return text.replace(f"]({results_prefix}", "](")


def record(benchmarks: Path, history: Path, new: str, *, header: str,
           history_header: str, results_prefix: str = "bench/results/") -> None:
    """Write ``new`` into ``benchmarks`` (starting it with ``header`` if it does not
    exist) and put the sections it replaces first in ``history``."""
    doc = benchmarks.read_text() if benchmarks.exists() else header
    updated, old = replace(doc, new)
    if old:
        past = history.read_text() if history.exists() else history_header
        past_head, past_sections = split(past)
        moved = [Section(s.title, _from_history(s.text, results_prefix))
                 for s in reversed(old)]  # newest first
        history.write_text(_join(past_head or history_header, moved + past_sections))
    benchmarks.write_text(updated)
