"""The adapter admin API (``/v1/adapters``: upload, pull, list, show, tag, delete, load,
unload; ``/v1/admission``) and vLLM's ``/v1/load_lora_adapter`` / ``unload``, over the
adapter service (store, sources, admission) and the serving table."""
