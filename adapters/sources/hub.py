"""Pull an adapter from a Hugging Face Hub repo, or any endpoint that speaks the Hub's API
(``HF_ENDPOINT``: a mirror, an on-prem hub, the test suite's local fake).

The download is :func:`huggingface_hub.snapshot_download` into a staging dir of the store,
pinned to the commit the revision resolved to, so a branch that moves mid-pull cannot mix
two commits. Before a byte of weights is fetched, the repo's file listing decides what to
take: ``adapter_config.json``, ``adapter_model.safetensors`` and, if the repo has one,
``hotswap.json`` (task defaults, :mod:`hotswap.adapters.defaults`) at the repo root, nothing
else (tokenizers, READMEs and checkpoints of the training run stay on the hub). A repo that
offers only pickle weights is refused without downloading them, and one whose files exceed
the size cap is refused from the listing. The downloaded files then go through the same
admission as an upload.

Which repos may be pulled at all is the server's policy (:class:`HubPolicy`, empty by
default): a pull is code-free but still puts third-party weights in front of users.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]
from huggingface_hub.utils.tqdm import disable_progress_bars

from ..admission import AdmissionLimits
from ..errors import (
    HubAccessDenied,
    HubRepoNotAllowed,
    HubRepoNotFound,
    HubUnavailable,
    InvalidHubRepo,
)
from ..names import HUB_NAME_SEPARATOR, NAME_PATTERN, REPO_ID_PATTERN
from .selection import select

logger = logging.getLogger(__name__)

#: Branch, tag or commit; slashes allowed (``refs/pr/1``), but no ``..`` (checked apart).
REVISION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
#: Seconds between progress reports while files download.
PROGRESS_INTERVAL_S = 0.25

#: Errors of the local disk while downloading (full, read-only, no permission).
_LOCAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})

#: ``on_progress(done_bytes, total_bytes)``, called from a helper thread.
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class HubRef:
    """``owner/name`` at a revision (``main`` unless pinned)."""

    repo_id: str
    revision: str = "main"

    @classmethod
    def parse(cls, text: str, revision: str | None = None) -> HubRef:
        """``owner/name`` or ``owner/name@revision``; an explicit ``revision`` wins."""
        repo_id, _, at_rev = text.strip().partition("@")
        rev = revision or at_rev or "main"
        if not REPO_ID_PATTERN.fullmatch(repo_id) or ".." in repo_id:
            raise InvalidHubRepo(f"{text!r} is not a Hugging Face repo id (owner/name)")
        try:
            validate_repo_id(repo_id)  # the hub's finer rules ('--', trailing '-' or '.git')
        except HFValidationError as exc:
            raise InvalidHubRepo(f"{text!r} is not a valid Hugging Face repo id: "
                                 f"{_first_line(exc)}") from None
        if not REVISION_PATTERN.fullmatch(rev) or ".." in rev:
            raise InvalidHubRepo(f"{rev!r} is not a valid revision (branch, tag or commit)")
        return cls(repo_id, rev)

    @property
    def default_name(self) -> str:
        """The adapter name a pull stores under unless told otherwise: ``owner--name``,
        lower-cased (hub ids are case-insensitive; adapter names are lower-case)."""
        name = self.repo_id.replace("/", HUB_NAME_SEPARATOR).lower()
        if not NAME_PATTERN.fullmatch(name):
            raise InvalidHubRepo(
                f"{self.repo_id!r} does not fit an adapter name ({len(name)} chars, max 64); "
                "pass a name for it"
            )
        return name

    @property
    def tag(self) -> str:
        """The store tag for this revision: lower-cased, ``/`` as ``-`` (``refs/pr/1`` ->
        ``refs-pr-1``), so any hub revision can name a tag."""
        tag = re.sub(r"[^a-z0-9._-]", "-", self.revision.lower())[:64]
        if not NAME_PATTERN.fullmatch(tag):
            raise InvalidHubRepo(f"revision {self.revision!r} can not name a tag")
        return tag

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}"


def is_repo_id(text: str) -> bool:
    """Whether a request's ``model`` looks like a hub repo (``owner/name[@rev]``)."""
    return REPO_ID_PATTERN.fullmatch(text.partition("@")[0]) is not None


@dataclass(frozen=True)
class HubPolicy:
    """Which repos may be pulled: entries ``*`` (any), ``owner`` (all of an owner's repos)
    or ``owner/name``; compared case-insensitively, as the hub does."""

    allow: tuple[str, ...] = ()

    def permits(self, repo_id: str) -> bool:
        repo = repo_id.lower()
        owner = repo.partition("/")[0]
        return any(a == "*" or a.lower() in (repo, owner) for a in self.allow)

    def check(self, ref: HubRef) -> None:
        if not self.permits(ref.repo_id):
            hint = ("no hub repos are allowed on this server (--hub-allow)" if not self.allow
                    else "allowed: " + ", ".join(self.allow))
            raise HubRepoNotAllowed(f"hub repo {ref.repo_id} is not allowed; {hint}")


def download(ref: HubRef, dest: Path, limits: AdmissionLimits, *, token: str | None = None,
             endpoint: str | None = None, on_progress: ProgressFn | None = None) -> str:
    """Download the adapter files of ``ref`` into the empty dir ``dest`` (a staging dir of
    the store, so the files can be admitted and moved, not copied); return the commit.

    ``token`` None: huggingface_hub's own lookup (``HF_TOKEN``, the login cache).
    ``endpoint`` None: ``HF_ENDPOINT`` as huggingface_hub read it at import. Raises a
    :class:`HubError` for hub trouble, an :class:`AdmissionError` for a repo that holds no
    acceptable adapter. On any error ``dest`` may hold partial files: the caller's staging
    dir is discarded anyway.
    """
    api = HfApi(endpoint=endpoint, token=token)
    with _hub_errors(ref):
        commit = api.repo_info(ref.repo_id, revision=ref.revision).sha
        if commit is None:
            raise HubUnavailable(f"hub returned no commit for {ref}")
        tree = [f for f in api.list_repo_tree(ref.repo_id, revision=commit, recursive=True)
                if isinstance(f, RepoFile)]
    wanted = _select(ref, tree, limits)
    total = sum(f.size for f in wanted)
    logger.info("pulling %s (commit %s): %d files, %d bytes", ref, commit[:12], len(wanted),
                total)
    # snapshot_download keeps its metadata in dest/.cache; the hub cache goes there too, so
    # nothing lands in ~/.cache, and all of it is removed before admission.
    meta = dest / ".cache"
    stop = threading.Event()
    reporter = None
    if on_progress is not None:
        reporter = threading.Thread(target=_report, args=(dest, total, on_progress, stop),
                                    name="hub-progress", daemon=True)
        reporter.start()
    disable_progress_bars()  # progress is reported through on_progress, not tqdm on stderr
    try:
        with _hub_errors(ref):
            snapshot_download(
                ref.repo_id, revision=commit,
                # Patterns are fnmatch globs: escaped, each matches its one file.
                allow_patterns=[glob.escape(f.path) for f in wanted],
                local_dir=dest, cache_dir=meta / "hub", token=token, endpoint=endpoint,
                max_workers=2,
            )
    finally:
        stop.set()
        if reporter is not None:
            reporter.join()
    shutil.rmtree(meta, ignore_errors=True)
    _check_complete(ref, dest, wanted)
    if on_progress is not None:
        on_progress(total, total)
    return commit


def _select(ref: HubRef, tree: list[RepoFile], limits: AdmissionLimits) -> list[RepoFile]:
    """The adapter's files at the repo root (:func:`selection.select`): cards, merged
    models, checkpoints and tokenizers stay on the hub; the manifest's source names the
    repo and commit."""
    root = {f.path: f for f in tree if "/" not in f.path}
    names = select({path: f.size for path, f in root.items()}, f"hub repo {ref} (root)",
                   limits)
    return [root[name] for name in names]


def _check_complete(ref: HubRef, files_dir: Path, wanted: list[RepoFile]) -> None:
    # snapshot_download raises on broken transfers; this also catches a hub that served
    # fewer bytes than its listing promised.
    for f in wanted:
        path = files_dir / f.path
        size = path.stat().st_size if path.is_file() else -1
        if size != f.size:
            raise HubUnavailable(f"download of {f.path} from {ref} is incomplete "
                                 f"({max(size, 0)} of {f.size} bytes)")


def _report(dest: Path, total: int, on_progress: ProgressFn, stop: threading.Event) -> None:
    # Polls bytes on disk rather than hooking huggingface_hub's tqdm plumbing, which changes
    # between releases; partial files (``*.incomplete``) count as they grow.
    last = -1
    while not stop.wait(PROGRESS_INTERVAL_S):
        done = 0
        for path in dest.rglob("*"):
            try:
                if path.is_file() and not path.is_symlink():
                    done += path.stat().st_size
            except OSError:
                continue  # renamed or removed under us
        done = min(done, total)
        if done != last:
            on_progress(done, total)
            last = done


@contextlib.contextmanager
def _hub_errors(ref: HubRef) -> Iterator[None]:
    """Map huggingface_hub and transport errors to :class:`HubError` subclasses."""
    try:
        yield
    except GatedRepoError as exc:
        raise HubAccessDenied(f"hub repo {ref.repo_id} is gated: accept its terms and "
                              "give the server a token (HF_TOKEN)") from exc
    except RevisionNotFoundError as exc:
        raise HubRepoNotFound(f"hub repo {ref.repo_id} has no revision "
                              f"{ref.revision!r}") from exc
    except RepositoryNotFoundError as exc:
        raise HubRepoNotFound(f"hub repo {ref.repo_id} not found (or private: the "
                              "server then needs a token, HF_TOKEN)") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise HubAccessDenied(f"hub refused access to {ref.repo_id} "
                                  f"(HTTP {status}); check HF_TOKEN") from exc
        raise HubUnavailable(f"hub error for {ref} (HTTP {status})") from exc
    except (httpx2.HTTPError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno in _LOCAL_ERRNOS:
            # This server's disk, not the hub: the puller maps a full one to DiskFull
            # (507); the rest stays a server error, logged as such.
            raise
        raise HubUnavailable(f"pulling {ref} failed: {type(exc).__name__}: "
                             f"{_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"
