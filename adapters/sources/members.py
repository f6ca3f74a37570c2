"""Which archive member names an upload may use, and the relative path each one names.

A name is refused if it could leave the staging directory (:class:`UnsafePath`) or if the
server could not create, walk or report it cleanly (:class:`InvalidMemberName`): an
adapter needs a handful of short ASCII names, so anything odd is refused with a 4xx here
rather than failing later as an ``OSError`` or ``RecursionError``.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from ..errors import InvalidMemberName, UnsafePath

#: NAME_MAX of Linux filesystems: a longer component fails ``open`` with ENAMETOOLONG.
MAX_COMPONENT_BYTES = 255
#: A whole member path. PATH_MAX is 4096 and the store's staging path comes first; real
#: adapter paths are under 100 bytes.
MAX_NAME_BYTES = 1024
#: Directory levels. Adapters are 1-3 deep; thousands of levels make the recursive
#: walkers (``shutil.rmtree`` of the staging dir, ``os.walk``) hit the recursion limit.
MAX_DEPTH = 16

_DRIVE = re.compile(r"^[A-Za-z]:")
# C0 controls and DEL: a newline or escape in a name breaks logs, manifests and terminals.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def member_path(name: str) -> PurePosixPath | None:
    """The checked relative path of member ``name``; None for the archive root (``./``)."""
    if not name or "\x00" in name or "\\" in name:
        raise UnsafePath(f"member {_shown(name)}: empty name, NUL or backslash")
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafePath(f"member {_shown(name)}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(f"member {_shown(name)}: '..' would leave the staging directory")
    try:
        # tarfile decodes undecodable bytes to surrogates, which do not encode back.
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidMemberName(f"member {_shown(name)}: name is not valid UTF-8") from None
    if _CONTROL.search(name):
        raise InvalidMemberName(f"member {_shown(name)}: name holds a control character")
    if size > MAX_NAME_BYTES:
        raise InvalidMemberName(f"member {_shown(name)}: name over {MAX_NAME_BYTES} bytes")
    if len(parts) > MAX_DEPTH:
        raise InvalidMemberName(f"member {_shown(name)}: more than {MAX_DEPTH} levels deep")
    for part in parts:
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise InvalidMemberName(
                f"member {_shown(name)}: a path component over {MAX_COMPONENT_BYTES} bytes"
            )
    return PurePosixPath(*parts) if parts else None


def _shown(name: str) -> str:
    """``name`` for a message: an error must not echo a 64 KiB name back."""
    return repr(name) if len(name) <= 80 else f"{name[:80]!r}..."
