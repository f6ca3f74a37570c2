"""Where adapters come from. Each source fills an empty staging directory (normally one
from :meth:`hotswap.adapters.store.Store.staging`); the store then admits and commits it.

Sources only move bytes, with caps and path safety; whether the bytes are an acceptable
adapter is :mod:`hotswap.adapters.admission`'s job.
"""

#: Bytes moved per read or write when copying, extracting or draining a body: large
#: enough that per-call overhead vanishes, small enough to stay cheap in memory.
CHUNK = 1 << 20
