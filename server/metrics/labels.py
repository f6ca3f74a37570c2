"""The ``adapter`` label's values, bounded.

Every adapter name becomes a label value on a dozen series (histograms: ~15 series
each), so a server with thousands of adapters would hand Prometheus tens of thousands
of series. At most ``limit`` names get their own value, in the order they were first
served (a counter can not move to a new label value without breaking ``rate()``);
every later one is counted as ``other``. A name deleted from the store gives its value
back (:meth:`forget`), so churn does not exhaust the bound. The base model is always
``base``.
"""

from __future__ import annotations

import threading

BASE = "base"
OTHER = "other"


class AdapterLabels:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._kept: dict[str, str] = {}  # name -> adapter type (lora, prompt, prefix)
        # Scrapes read the set from the event loop; pulls and loads may name adapters
        # from worker threads.
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        return self._limit

    def set_limit(self, limit: int) -> None:
        """Settings are read after import; names kept so far stay kept."""
        with self._lock:
            self._limit = limit

    def of(self, name: str | None, kind: str) -> tuple[str, str]:
        """``(adapter, type)`` labels of ``name`` (None: the base model), taking a free
        value for a name not seen before."""
        if name is None:
            return BASE, BASE
        with self._lock:
            if name in self._kept or len(self._kept) < self._limit:
                self._kept[name] = kind
                return name, kind
        return OTHER, kind

    def existing(self, name: str) -> tuple[str, str]:
        """The labels ``name`` already has, without taking a value: for requests refused
        before their ``model`` was known to exist (any string could be sent)."""
        with self._lock:
            kind = self._kept.get(name)
        return (name, kind) if kind is not None else (OTHER, "unknown")

    def kept(self) -> dict[str, str]:
        with self._lock:
            return dict(self._kept)

    def forget(self, name: str) -> bool:
        """Free ``name``'s value; True if it had one (its series should then go)."""
        with self._lock:
            return self._kept.pop(name, None) is not None
