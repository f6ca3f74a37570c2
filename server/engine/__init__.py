"""The engine boundary: ``interface.py`` (what the rest of hotswap may ask), ``vllm.py``
and ``plugins/`` (the only importers of vLLM), ``fake.py`` (HTTP unit tests)."""
