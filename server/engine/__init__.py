"""Engine boundary. Only ``vllm.py`` and the vLLM plugins next to it import vllm."""
