"""Code vLLM loads into its engine and worker processes.

The general plugins ``cpu_lora`` and ``parent_watch`` (registered as entry points in
pyproject.toml) and the worker extension ``lora_residency``. With ``../vllm.py``, the
only modules that import vllm.
"""
