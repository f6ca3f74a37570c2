"""A multi-adapter load generator for any OpenAI-compatible endpoint (hotswap, vLLM's
server, LoRAX's OpenAI route, SGLang): what S-LoRA and Punica measure, at the client.

- :mod:`.workload`: requests drawn once from a seed: ``model`` by Zipf(alpha) popularity
  over the models given (alpha 0 = uniform), prompt and output lengths from seeded
  distributions, Poisson arrival times for open-loop runs.
- :mod:`.client`: one streaming ``/v1/completions`` request, timed: time to first token,
  the gaps between tokens, usage.
- :mod:`.runner`: closed loop (fixed concurrency) or open loop (arrivals at a rate), with
  a progress callback.
- :mod:`.report`: throughput, TTFT / TPOT percentiles, errors; JSON and a table.

It imports nothing of bench/ or tests/ (the tests load it by path, as the soak's core),
and no engine: only httpx.
"""

from .report import Summary, summarize
from .runner import run_closed, run_open
from .workload import Workload, WorkloadSpec, make_workload

__all__ = ["Summary", "Workload", "WorkloadSpec", "make_workload", "run_closed", "run_open",
           "summarize"]
