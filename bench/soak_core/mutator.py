"""The admin side of the soak: the one sequential writer of its adapters' refs (set-up,
then scripted and random uploads, tag moves, deletes and re-creations), each call
recorded in the timeline with the window of its HTTP call."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from .config import ArchiveFactory, SoakConfig
from .oracle import RefOp, Timeline, Value
from .result import AdminOp, Live


@dataclass
class NameState:
    latest: str | None = None
    stable: str | None = None

    @property
    def alive(self) -> bool:
        return self.latest is not None or self.stable is not None


class Mutator:
    """The one writer of the soak's refs: every admin call goes through here and is
    recorded in the timeline with the window of its HTTP call."""

    def __init__(self, cfg: SoakConfig, admin: httpx.AsyncClient, archives: ArchiveFactory,
                 timeline: Timeline) -> None:
        self.cfg = cfg
        self.admin = admin
        self.archives = archives
        self.timeline = timeline
        self.names = [f"{cfg.prefix}-{i}" for i in range(cfg.adapters)]
        self.state = {n: NameState() for n in self.names}
        self.seed_of: dict[str, int] = {}  # digest -> seed of its archive
        self.ops: list[AdminOp] = []
        self.errors: list[str] = []
        self.rng = random.Random(cfg.seed)
        self.steps = 0
        self._next_seed = cfg.seed * 100_000 + 1

    # One call each; every call records its refs' new values over its window.

    async def upload(self, name: str, tag: str, kind: str) -> str | None:
        seed = self._next_seed
        self._next_seed += 1
        archive = await asyncio.to_thread(self.archives, seed)
        start = time.monotonic()
        resp = await self._call("POST", "/v1/adapters", params={"name": name, "tag": tag},
                                content=archive,
                                headers={"content-type": "application/octet-stream"})
        end = time.monotonic()
        if resp is None or resp.status_code != 201:
            await self._failed(kind, name, start, resp)
            return None
        digest = str(resp.json()["version"]["digest"])
        self.seed_of.setdefault(digest, seed)
        self._set(name, tag, digest, start, end)
        self.ops.append(AdminOp(kind, name, start, end, resp.status_code, digest))
        return digest

    async def tag(self, name: str, tag: str, digest: str, kind: str) -> None:
        start = time.monotonic()
        resp = await self._call("PUT", f"/v1/adapters/{name}/tags/{tag}",
                                json={"digest": digest})
        end = time.monotonic()
        if resp is None or resp.status_code != 200:
            await self._failed(kind, name, start, resp)
            return
        self._set(name, tag, digest, start, end)
        self.ops.append(AdminOp(kind, name, start, end, resp.status_code, digest))

    async def delete(self, ref: str, kind: str) -> None:
        name, _, tag = ref.partition(":")
        start = time.monotonic()
        resp = await self._call("DELETE", f"/v1/adapters/{ref}")
        end = time.monotonic()
        if resp is None or resp.status_code != 200:
            await self._failed(kind, name, start, resp)
            return
        for t in [tag] if tag else ["latest", "stable"]:
            self._set(name, t, None, start, end)
        self.ops.append(AdminOp(kind, name, start, end, resp.status_code))

    async def _call(self, method: str, path: str, **kw: Any) -> httpx.Response | None:
        try:
            return await self.admin.request(method, path, **kw)
        except httpx.HTTPError as exc:
            self.errors.append(f"{method} {path}: {type(exc).__name__}: {exc}")
            return None

    async def _failed(self, kind: str, name: str, start: float,
                      resp: httpx.Response | None) -> None:
        """An admin call that did not do what it should: a soak failure. What it did is
        unknown, so the name's refs are read back and taken as changed over the call and
        the read."""
        detail = "no answer" if resp is None else f"{resp.status_code} {resp.text[:300]}"
        self.errors.append(f"{kind} {name}: {detail}")
        tags: dict[str, str] = {}
        with contextlib.suppress(httpx.HTTPError):
            got = await self.admin.get(f"/v1/adapters/{name}")
            if got.status_code == 200:
                tags = got.json()["tags"]
        end = time.monotonic()
        for t in ("latest", "stable"):
            self._set(name, t, tags.get(t), start, end)
        self.ops.append(AdminOp(kind, name, start, end,
                                None if resp is None else resp.status_code, detail=detail))

    def _set(self, name: str, tag: str, value: Value, start: float, end: float) -> None:
        if tag == "latest":
            self.state[name].latest = value
        elif tag == "stable":
            self.state[name].stable = value
        self.timeline.record(RefOp(f"{name}:{tag}", start, end, value))

    # The set-up and the random walk.

    async def set_up(self) -> None:
        for name in self.names:
            await self.create(name, "create")

    async def create(self, name: str, kind: str) -> None:
        digest = await self.upload(name, "latest", kind)
        if digest is not None:
            await self.tag(name, "stable", digest, kind)

    # The first ops cover every kind once, each where it has something to do (name
    # index), so a short soak exercises them all whatever its timing; then random ops.
    SCRIPT = (("upload", 0), ("rollback", 0), ("upload", 1), ("promote", 1),
              ("delete_tag", 2), ("delete", 3), ("recreate", 3))
    KINDS = ("upload", "promote", "rollback", "delete_tag", "delete", "recreate")

    async def step(self, index: int) -> None:
        alive = [n for n in self.names if self.state[n].alive]
        dead = [n for n in self.names if not self.state[n].alive]
        if index < len(self.SCRIPT):
            kind, at = self.SCRIPT[index]
            name = self.names[at % len(self.names)]
        else:
            kind = self.rng.choices(self.KINDS, weights=[35, 20, 10, 10, 20, 25])[0]
            name = self.rng.choice(dead if kind == "recreate" and dead else alive)
        may_delete = len(alive) - 1 >= self.cfg.min_alive_share * len(self.names)
        st = self.state[name]
        if kind == "recreate" and not st.alive:
            await self.create(name, "recreate")
        elif kind == "promote" and st.latest is not None and st.latest != st.stable:
            await self.tag(name, "stable", st.latest, "promote")
        elif kind == "rollback" and st.stable is not None and st.stable != st.latest:
            await self.tag(name, "latest", st.stable, "rollback")
        elif kind == "delete_tag" and st.stable is not None and st.latest is not None:
            await self.delete(f"{name}:stable", "delete_tag")
        elif kind == "delete" and may_delete:
            await self.delete(name, "delete")
        elif st.alive:
            # Upload (also when the drawn op has nothing to do here): a new version
            # becomes latest; stable stays on the old one, so both keep being served.
            await self.upload(name, "latest", "upload")
        else:
            await self.create(name, "recreate")

    async def run(self, stop: asyncio.Event, live: Live) -> None:
        index = 0
        while not stop.is_set():
            await self.step(index)
            index += 1
            self.steps = index
            live.ops = len(self.ops)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.mutation_every_s
                                       * self.rng.uniform(0.5, 1.5))
