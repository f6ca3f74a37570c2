"""vLLM's ``POST /tokenize`` and ``POST /detokenize``."""
