"""Which files of a remote or watched adapter to fetch, decided from a listing alone.

Hub repos, S3 prefixes and watched directories all hold more than an adapter (cards,
checkpoints, tokenizers, other adapters below). Before a byte is fetched, the listing of
the adapter's own level decides: ``adapter_config.json``, ``adapter_model.safetensors``
and, if present, ``hotswap.json`` (task defaults), by exact name, nothing else. Pickle
weights alone are refused without being fetched, and files over the size cap are refused
from their listed sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath

from ..admission import CONFIG_FILE, PICKLE_SUFFIXES, WEIGHTS_FILE, AdmissionLimits
from ..defaults import DEFAULTS_FILE
from ..errors import InvalidAdapterConfig, MissingWeights, PickleRefused, TooLarge

#: Every file a source may fetch for an adapter.
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE, DEFAULTS_FILE)


def select(sizes: Mapping[str, int], where: str, limits: AdmissionLimits) -> list[str]:
    """The names to fetch from ``sizes`` (file name -> size, one directory level);
    ``where`` names the place in error messages ("hub repo a/b@main", "s3://b/p")."""
    if CONFIG_FILE not in sizes:
        raise InvalidAdapterConfig(f"{where} has no {CONFIG_FILE}: not a PEFT adapter")
    if WEIGHTS_FILE not in sizes:
        pickles = sorted(p for p in sizes if PurePosixPath(p).suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise PickleRefused(
                f"{where} has only pickle weights ({', '.join(pickles)}); they are never "
                f"downloaded or unpickled. Convert them to {WEIGHTS_FILE}"
            )
        raise MissingWeights(f"{where} has no {WEIGHTS_FILE}")
    wanted = [name for name in ADAPTER_FILES if name in sizes]
    total = sum(sizes[name] for name in wanted)
    if total > limits.max_total_bytes:
        raise TooLarge(f"{where}: adapter files total {total} bytes, over the cap of "
                       f"{limits.max_total_bytes}")
    return wanted
