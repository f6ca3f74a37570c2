"""The requests of one run, drawn once from a seed so every server gets the same ones."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorkloadSpec:
    #: Model ids in popularity order: the first is the most requested under Zipf.
    models: tuple[str, ...]
    requests: int = 64
    #: Zipf exponent over ``models`` (0: uniform; ~1: a few hot adapters, a long tail).
    alpha: float = 1.0
    #: Prompt tokens ~ N(mean, std), clipped to [1, 4 * mean]; the same for outputs.
    prompt_mean: int = 64
    prompt_std: float = 16.0
    output_mean: int = 32
    output_std: float = 0.0
    #: Token ids prompts are drawn from (below any tokenizer's special tokens).
    vocab: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class Request:
    index: int
    model: str
    prompt: list[int] = field(repr=False)
    max_tokens: int


@dataclass(frozen=True)
class Workload:
    spec: WorkloadSpec
    requests: list[Request]

    def arrivals(self, rate: float) -> list[float]:
        """Seconds from the start at which each request is sent: a Poisson process of
        ``rate`` requests per second (exponential gaps), seeded like the rest."""
        rng = random.Random(self.spec.seed + 1)
        t, out = 0.0, []
        for _ in self.requests:
            out.append(t)
            t += rng.expovariate(rate)
        return out

    def counts(self) -> dict[str, int]:
        """Requests per model (the popularity the run sees)."""
        out = dict.fromkeys(self.spec.models, 0)
        for r in self.requests:
            out[r.model] += 1
        return out


def zipf_weights(n: int, alpha: float) -> list[float]:
    raw = [1.0 / (rank ** alpha) for rank in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def _length(rng: random.Random, mean: int, std: float) -> int:
    value = round(rng.gauss(mean, std)) if std > 0 else mean
    return max(1, min(value, 4 * mean))


def make_workload(spec: WorkloadSpec) -> Workload:
    if not spec.models:
        raise ValueError("no models to send requests to")
    rng = random.Random(spec.seed)
    weights = zipf_weights(len(spec.models), spec.alpha)
    requests = []
    for i in range(spec.requests):
        model = rng.choices(spec.models, weights)[0]
        prompt = [rng.randrange(10, spec.vocab) for _ in
                  range(_length(rng, spec.prompt_mean, spec.prompt_std))]
        requests.append(Request(i, model, prompt,
                                _length(rng, spec.output_mean, spec.output_std)))
    return Workload(spec, requests)
