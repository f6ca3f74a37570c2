"""``tool_choice: "auto"``: the model's own tool-call syntax, read by vLLM's parser
(``--tool-call-parser hermes``), with a chat template that shows tools
(``--chat-template``). The bundled model was not trained for tools, so a regex
constraint makes it write the Hermes syntax (or plain text): what is tested is the
server's reading of it, streaming and not, and the template's rendering of tool calls
and results."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from support.server import ServerInfo, running_server

pytestmark = pytest.mark.engine

TEMPLATE = Path(__file__).parent.parent / "support" / "templates" / "chatml_tools.jinja"
TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
WEATHER = [{"role": "user", "content": "What is the weather like in Paris?"}]
#: Hermes' syntax for one call, as a constraint the bundled model can follow.
HERMES_CALL = (r'<tool_call>\n\{"name": "get_weather", "arguments": '
               r'\{"city": "[A-Z][a-z]{2,12}"\}\}\n</tool_call>')


@pytest.fixture(scope="module")
def tool_server(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[ServerInfo]:
    root = tmp_path_factory.mktemp("tool-parser")
    args = ["--model", str(base_model_dir), "--served-model-name", "smollm2",
            "--dtype", "float32", "--max-model-len", "1024", "--memory-fraction", "0.01",
            "--chat-template", str(TEMPLATE), "--tool-call-parser", "hermes"]
    with running_server(args, root / "server.log", "smollm2", {},
                        store=root / "store") as server:
        yield server


def client(server: ServerInfo) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def ask(server: ServerInfo, regex: str, **kwargs: Any) -> Any:
    kwargs = {"max_tokens": 60, **kwargs}
    return client(server).chat.completions.create(
        model="smollm2", messages=WEATHER, tools=TOOLS, temperature=0,  # type: ignore[arg-type]
        extra_body={"structured_outputs": {"regex": regex}}, **kwargs)


def test_auto_reads_a_call_in_the_models_syntax(tool_server: ServerInfo) -> None:
    resp = ask(tool_server, HERMES_CALL)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and [c.function.name for c in calls] == ["get_weather"]
    assert set(json.loads(calls[0].function.arguments)) == {"city"}
    assert not choice.message.content

    names, pieces, finish = [], [], None
    for chunk in ask(tool_server, HERMES_CALL, stream=True):
        if not chunk.choices:
            continue
        for tc in chunk.choices[0].delta.tool_calls or []:
            if tc.id:
                names.append(tc.function.name)
            pieces.append(tc.function.arguments or "")
        finish = chunk.choices[0].finish_reason or finish
    assert names == ["get_weather"]
    assert json.loads("".join(pieces)) == json.loads(calls[0].function.arguments)
    assert finish == "tool_calls"


def test_auto_passes_plain_text_on_as_content(tool_server: ServerInfo) -> None:
    resp = ask(tool_server, "It is sunny in [A-Z][a-z]{2,12}[.]")
    assert resp.choices[0].message.tool_calls is None
    assert resp.choices[0].finish_reason == "stop"
    text = resp.choices[0].message.content
    assert text and text.startswith("It is sunny in")
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       ask(tool_server, "It is sunny in [A-Z][a-z]{2,12}[.]", stream=True)
                       if c.choices)
    assert streamed == text


def test_tool_calls_and_results_go_through_the_template(tool_server: ServerInfo) -> None:
    history = [*WEATHER,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function", "function": {
                       "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    resp = client(tool_server).chat.completions.create(
        model="smollm2", messages=history, tools=TOOLS, tool_choice="none",  # type: ignore[arg-type]
        temperature=0, max_tokens=5)
    assert resp.choices[0].message.content is not None
    # What the model saw: the template's rendering, read back through /tokenize.
    tokens = httpx.post(f"{tool_server.url}/tokenize",
                        json={"model": "smollm2", "messages": history}).json()["tokens"]
    assert resp.usage is not None and resp.usage.prompt_tokens >= len(tokens)
    seen = httpx.post(f"{tool_server.url}/detokenize",
                      json={"model": "smollm2", "tokens": tokens}).json()["prompt"]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in seen
    assert "<tool_response>\nsunny, 21 C\n</tool_response>" in seen


def test_an_unknown_parser_stops_the_server_at_once(base_model_dir: Path) -> None:
    hotswap = Path(sys.executable).parent / "hotswap"
    done = subprocess.run([str(hotswap), "serve", "--model", str(base_model_dir),
                           "--tool-call-parser", "no-such-parser"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "not one of vLLM's parsers" in done.stderr and "hermes" in done.stderr


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_tool_calls_false_keeps_the_first_call(tool_server: ServerInfo,
                                                        stream: bool) -> None:
    two = f"{HERMES_CALL}\n{HERMES_CALL}"

    def names(parallel: bool) -> list[str]:
        resp = ask(tool_server, two, stream=stream, parallel_tool_calls=parallel,
                   max_tokens=120)
        if not stream:
            return [c.function.name for c in resp.choices[0].message.tool_calls or []]
        return [tc.function.name for chunk in resp if chunk.choices
                for tc in chunk.choices[0].delta.tool_calls or [] if tc.id]

    assert names(True) == ["get_weather", "get_weather"]
    assert names(False) == ["get_weather"]
