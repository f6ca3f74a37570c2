"""The sorted name listing of refs/ that pages of a large store reuse: kept only while
refs/ is unchanged and was settled when listed, so no name another process adds or
removes is missed or kept."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hotswap.adapters.store import Store, refs
from hotswap.adapters.store.layout import Layout

DIGEST = "a" * 64


def settle(layout: Layout) -> None:
    """As if refs/ last changed a minute ago (then the listing may be kept)."""
    old = time.time_ns() - 60 * 1_000_000_000
    os.utime(layout.refs, ns=(old, old))


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "store")
    layout.refs.mkdir(parents=True)
    layout.tmp.mkdir()
    for name in ("b", "a", "c"):
        refs.write_ref(layout, name, "latest", DIGEST)
    return layout


def test_a_settled_listing_is_kept_and_a_fresh_one_is_not(layout: Layout) -> None:
    fresh = refs.sorted_names(layout)
    assert fresh == ("a", "b", "c")
    assert refs.sorted_names(layout) is not fresh  # just changed: listed again
    settle(layout)
    kept = refs.sorted_names(layout)
    assert kept == ("a", "b", "c")
    assert refs.sorted_names(layout) is kept


def test_names_added_or_removed_by_anyone_show_at_once(layout: Layout) -> None:
    settle(layout)
    assert refs.sorted_names(layout) == ("a", "b", "c")
    (layout.refs / "aa").mkdir()  # another process's new name: no call of ours made it
    assert refs.sorted_names(layout) == ("a", "aa", "b", "c")
    settle(layout)
    refs.sorted_names(layout)
    (layout.refs / "aa").rmdir()
    assert refs.sorted_names(layout) == ("a", "b", "c")


def test_pages_from_a_kept_listing_see_a_new_name(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "store")
    layout.refs.mkdir(parents=True)
    layout.tmp.mkdir()
    for i in range(0, 20, 2):
        refs.write_ref(layout, f"n{i:02d}", "latest", DIGEST)
    settle(layout)
    assert [n for n, _ in refs.refs_from(layout, strict=False, start="n05")][:2] == \
        ["n06", "n08"]
    refs.write_ref(layout, "n07", "latest", DIGEST)
    assert [n for n, _ in refs.refs_from(layout, strict=False, start="n05")][:2] == \
        ["n06", "n07"]
    # A name whose last tag went (its folder left behind) is not listed.
    (layout.refs / "n06" / "latest").unlink()
    assert [n for n, _ in refs.refs_from(layout, strict=False, start="n05")][:1] == ["n07"]


def test_store_list_pages_match_the_full_listing(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    layout = Layout(store.root)
    for i in range(12):
        refs.write_ref(layout, f"x{i:02d}", "latest", DIGEST)
    settle(layout)
    whole = [e.name for e in store.list()]
    assert whole == [f"x{i:02d}" for i in range(12)]
    assert [e.name for e in store.list(start="x03", limit=4)] == whole[3:7]
    assert [e.name for e in store.list(start="x035", limit=2)] == whole[4:6]
