"""bench/loadgen_core without a server: the workload is what its seed says, Zipf and
Poisson as specified, and the summary's arithmetic."""

from __future__ import annotations

import statistics

import pytest
from support.bench_core import load_bench_package

lg = load_bench_package("loadgen_core")
from loadgen_core.client import Result  # noqa: E402  (importable once loaded by path)
from loadgen_core.workload import zipf_weights  # noqa: E402


def spec(**kw: object) -> object:
    return lg.WorkloadSpec(models=("base", "a", "b", "c"), **kw)


def test_the_seed_fixes_the_workload() -> None:
    one, two = lg.make_workload(spec(seed=3)), lg.make_workload(spec(seed=3))
    assert one.requests == two.requests
    assert one.requests != lg.make_workload(spec(seed=4)).requests
    assert one.arrivals(2.0) == two.arrivals(2.0)


def test_zipf_popularity_and_uniform() -> None:
    assert zipf_weights(3, 0) == pytest.approx([1 / 3] * 3)
    weights = zipf_weights(4, 1.0)
    assert weights == sorted(weights, reverse=True) and sum(weights) == pytest.approx(1)
    counts = lg.make_workload(spec(requests=4000, alpha=1.0)).counts()
    shares = [counts[m] / 4000 for m in ("base", "a", "b", "c")]
    assert shares == pytest.approx(weights, abs=0.03)
    flat = lg.make_workload(spec(requests=4000, alpha=0.0)).counts()
    assert all(abs(n / 4000 - 0.25) < 0.03 for n in flat.values())


def test_lengths_and_arrivals() -> None:
    work = lg.make_workload(spec(requests=2000, prompt_mean=50, prompt_std=10,
                                 output_mean=20, output_std=0))
    prompts = [len(r.prompt) for r in work.requests]
    assert statistics.mean(prompts) == pytest.approx(50, rel=0.05)
    assert min(prompts) >= 1 and max(prompts) <= 200
    assert {r.max_tokens for r in work.requests} == {20}
    gaps = [b - a for a, b in zip(work.arrivals(4.0), work.arrivals(4.0)[1:], strict=False)]
    assert statistics.mean(gaps) == pytest.approx(0.25, rel=0.1)


def test_summary_arithmetic() -> None:
    ok = Result(0, "a", sent=10.0, chunks=[10.5, 11.0, 11.5], output_tokens=5)
    also = Result(1, "b", sent=10.0, chunks=[11.0, 13.0], output_tokens=3)
    failed = Result(2, "a", sent=10.0, error="HTTP 503: busy")
    s = lg.summarize([ok, also, failed], wall_s=4.0)
    assert (s.requests, s.errors, s.error_samples) == (3, 1, ["HTTP 503: busy"])
    assert s.requests_per_s == 0.5 and s.output_tokens_per_s == 2.0
    assert s.ttft["p50"] == pytest.approx(0.75)
    assert ok.tpot == pytest.approx(0.25) and also.tpot == pytest.approx(1.0)
    assert s.tpot["p99"] == pytest.approx(0.9925)


def test_events_split_on_newlines_only() -> None:
    """Generated text holds any character; U+2028 or U+0085 sent raw inside an event's
    JSON (as servers do, ensure_ascii off) must not cut the event, and chunks may end
    anywhere."""
    import asyncio
    import json

    import httpx
    from loadgen_core.client import send
    from loadgen_core.workload import Request

    text = "a\u2028b\x85c\u2029"
    events = [{"choices": [{"text": text}]}, {"choices": [{"text": "d"}]},
              {"choices": [], "usage": {"completion_tokens": 2, "prompt_tokens": 3}}]
    body = "".join(f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events)
    body += "data: [DONE]\n\n"
    raw = body.encode()

    async def chunks() -> object:
        for i in range(0, len(raw), 7):  # cut mid-character and mid-line
            yield raw[i:i + 7]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks(), headers={"content-type": "text/event-stream"})

    async def run() -> object:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler),
                                     base_url="http://x") as client:
            return await send(client, Request(0, "m", [1, 2, 3], 2))

    result = asyncio.run(run())
    assert result.error is None, result.error
    assert len(result.chunks) == 2 and result.output_tokens == 2 and result.prompt_tokens == 3


def test_an_answer_whose_text_is_held_back_still_has_a_first_token_time() -> None:
    """Tokens ending inside a UTF-8 character come out as empty text until the last
    chunk; the answer was generated all the same (the cold-start probe met one)."""
    import asyncio
    import json

    import httpx
    from loadgen_core.client import send
    from loadgen_core.workload import Request

    events = [{"choices": [{"index": 0, "text": "", "finish_reason": None}]},
              {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]},
              {"choices": [], "usage": {"completion_tokens": 2, "prompt_tokens": 3}}]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"

    def reply(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body.encode(),
                              headers={"content-type": "text/event-stream"})

    async def one() -> Result:
        transport = httpx.MockTransport(reply)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            return await send(client, Request(0, "a", [1, 2, 3], 2))

    result = asyncio.run(one())
    assert result.error is None and result.output_tokens == 2
    assert result.ttft is not None and len(result.chunks) == 1
