"""The OpenAI-compatible API: one folder per endpoint (``router.py`` thin, ``protocol.py``
its wire schema, ``serving.py`` what is endpoint-specific), over one shared pipeline
(:mod:`.pipeline`): validate -> resolve -> engine input -> generate -> accumulate/stream.

A new endpoint is a new folder with an :class:`~.pipeline.Endpoint`, and its router added
to :data:`ROUTERS` in :mod:`.routers`.
"""

