"""One probe per feature of the OpenAI surface, runnable against any OpenAI-compatible
server: what status it answers and what the answer holds. The peer test runs it against
hotswap and vLLM's own server side by side and prints where they differ."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}},
          "required": ["name"], "additionalProperties": False}


@dataclass(frozen=True)
class Outcome:
    status: int
    #: What the answer shows, in a few words ("valid JSON", "tool_calls", the error...).
    summary: str


def probes(model: str) -> dict[str, tuple[str, str, dict[str, Any] | None]]:
    """name -> (method, path, body)."""
    msgs = [{"role": "user", "content": "Name a person."}]
    chat = {"model": model, "messages": msgs, "max_tokens": 40, "temperature": 0}
    return {
        "chat": ("POST", "/v1/chat/completions", chat),
        "response_format json_object": ("POST", "/v1/chat/completions",
                                        {**chat, "response_format": {"type": "json_object"}}),
        "response_format json_schema": ("POST", "/v1/chat/completions", {
            **chat, "response_format": {"type": "json_schema", "json_schema": {
                "name": "p", "schema": SCHEMA, "strict": True}}}),
        "structured_outputs choice": ("POST", "/v1/chat/completions", {
            **chat, "structured_outputs": {"choice": ["yes", "no"]}}),
        "structured_outputs regex": ("POST", "/v1/completions", {
            "model": model, "prompt": "Call", "max_tokens": 12, "temperature": 0,
            "structured_outputs": {"regex": "[0-9]{3}-[0-9]{4}"}}),
        "invalid json schema": ("POST", "/v1/chat/completions", {
            **chat, "response_format": {"type": "json_schema", "json_schema": {
                "name": "p", "schema": {"type": "nonsense"}}}}),
        "tool_choice required": ("POST", "/v1/chat/completions", {
            **chat, "max_tokens": 100, "tools": [WEATHER_TOOL], "tool_choice": "required"}),
        "tool_choice named": ("POST", "/v1/chat/completions", {
            **chat, "max_tokens": 100, "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
        "tool_choice auto (no parser)": ("POST", "/v1/chat/completions", {
            **chat, "tools": [WEATHER_TOOL], "tool_choice": "auto"}),
        "logit_bias": ("POST", "/v1/completions", {
            "model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0,
            "logit_bias": {"28": -100}}),
        "min_tokens": ("POST", "/v1/completions", {
            "model": model, "prompt": "Hello", "max_tokens": 20, "min_tokens": 20,
            "temperature": 0}),
        "unknown field": ("POST", "/v1/completions", {
            "model": model, "prompt": "Hello", "max_tokens": 1, "frobnicate": True}),
        "store true": ("POST", "/v1/chat/completions", {**chat, "store": True}),
        "responses": ("POST", "/v1/responses", {
            "model": model, "input": "Name a person.", "max_output_tokens": 20,
            "temperature": 0}),
        "models retrieve": ("GET", f"/v1/models/{model}", None),
        "tokenize": ("POST", "/tokenize", {"model": model, "prompt": "Hello world"}),
        "detokenize": ("POST", "/detokenize", {"model": model, "tokens": [19556, 905]}),
    }


def run(base_url: str, model: str, api_key: str | None = None) -> dict[str, Outcome]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    out = {}
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as http:
        for name, (method, path, body) in probes(model).items():
            resp = http.request(method, path, json=body)
            out[name] = Outcome(resp.status_code, _summary(resp))
    return out


def _summary(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:60]
    if resp.status_code >= 400:
        err = data.get("error", data)
        message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        return str(message)[:80]
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    if message.get("tool_calls"):
        return f"tool_calls {[c['function']['name'] for c in message['tool_calls']]}"
    text = message.get("content") if message else choice.get("text")
    if text is None:
        text = data.get("output_text") or _responses_text(data)
    if text is None:
        return ", ".join(sorted(data))[:80]
    try:
        json.loads(text)
        return f"JSON {text[:50]!r}"
    except ValueError:
        return repr(text[:50])


def _responses_text(data: dict[str, Any]) -> str | None:
    for item in data.get("output") or []:
        for part in item.get("content") or []:
            if part.get("type") == "output_text":
                return str(part.get("text"))
    return None


def table(ours: dict[str, Outcome], theirs: dict[str, Outcome]) -> str:
    """A Markdown table of both servers' answers, one row per probe."""
    rows = ["| probe | hotswap | vLLM's server |", "|---|---|---|"]
    for name in ours:
        a, b = ours[name], theirs[name]
        mark = "" if a.status == b.status else " **differs**"
        rows.append(f"| {name}{mark} | {a.status} {_cell(a.summary)} | "
                    f"{b.status} {_cell(b.summary)} |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
