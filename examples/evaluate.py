"""Score the base model and a demo-task adapter through a running hotswap server.

Uses only the official ``openai`` client and the standard chat completions API,
so it runs unchanged against hotswap, vLLM's own server or any compatible peer::

    python examples/evaluate.py --url http://127.0.0.1:8000/v1 -n 20
    python examples/evaluate.py --task route_ticket --adapter route-ticket-prompt

The held-out examples are the ones ``train.py`` scores with the same ``-n`` and
``--seed``, so the numbers are comparable with the adapter's README.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
from openai import OpenAI
from rich.console import Console
from rich.table import Table
from tasks import NAMES, Task, load

console = Console()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000/v1", help="OpenAI base URL")
    p.add_argument("--base-model", default="SmolLM2-135M-Instruct", help="served base model name")
    p.add_argument("--task", choices=NAMES, default="extract_person", help="demo task")
    p.add_argument("--adapter", default=None,
                   help="served adapter name (default: the task's LoRA, e.g. extract-person)")
    p.add_argument("-n", type=int, default=20, help="held-out examples to score")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight per model")
    p.add_argument("--api-key", default=None,
                   help="API key (default: $HOTSWAP_API_KEY, $OPENAI_API_KEY, or none)")
    p.add_argument("--show", type=int, default=3, help="wrong answers to print per model")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature (default 0: greedy, as train.py scores); "
                   "above 0 each example's request is seeded with its index, so runs repeat")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="max_tokens of each request (default: the task's cap)")
    p.add_argument("--text-format", action="store_true",
                   help='send response_format {"type": "text"}: opts out of an adapter\'s '
                   "default response_format (its hotswap.json), to score it without")
    return p.parse_args(argv)


def complete(client: OpenAI, task: Task, model: str, example: Any, index: int,
             args: argparse.Namespace) -> str:
    response = client.chat.completions.create(
        model=model,
        messages=task.build_messages(example),  # type: ignore[arg-type]  # plain dicts are valid
        temperature=args.temperature,  # 0: greedy, as train.py scores; repeatable
        seed=index if args.temperature > 0 else None,
        max_tokens=args.max_tokens or task.max_new_tokens,
        # Not sent by default: an adapter's default response_format then applies.
        extra_body={"response_format": {"type": "text"}} if args.text_format else None,
    )
    return response.choices[0].message.content or ""


def run(
    client: OpenAI, task: Task, model: str, examples: Sequence[Any], args: argparse.Namespace
) -> list[str]:
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        return list(pool.map(lambda i: complete(client, task, model, examples[i], i, args),
                             range(len(examples))))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    api_key = args.api_key or os.environ.get("HOTSWAP_API_KEY") or os.environ.get(
        "OPENAI_API_KEY", "none"  # the client insists on a key; an open server ignores it
    )
    client = OpenAI(base_url=args.url, api_key=api_key, max_retries=0)
    task = load(args.task)
    adapter = args.adapter or task.adapter
    examples = task.make_examples(args.n, "heldout", args.seed)

    formats = ', response_format "text"' if args.text_format else ""
    table = Table(title=f"{task.name}, {args.n} held-out examples, "
                  f"temperature {args.temperature:g}{formats}")
    table.add_column("model")
    table.add_column("exact matches", justify="right")
    if task.well_formed is not None:
        table.add_column("well-formed", justify="right")
    # One model at a time: each score then comes from requests for that model only,
    # which is what "base vs adapter" means.
    for model in (args.base_model, adapter):
        try:
            with console.status(f"Querying {model} at {args.url}"):
                outputs = run(client, task, model, examples, args)
        except openai.APIConnectionError as exc:
            console.print(f"[red]Cannot reach {args.url} ({exc}) Is the server running?[/]")
            return 2
        except openai.APIStatusError as exc:
            console.print(f"[red]{model}: {exc.message}[/]")
            return 2
        wrong = [(ex, out) for ex, out in zip(examples, outputs, strict=True)
                 if not task.is_correct(ex, out)]
        row = [model, f"{len(examples) - len(wrong)}/{len(examples)}"]
        if task.well_formed is not None:
            row.append(f"{sum(map(task.well_formed, outputs))}/{len(examples)}")
        table.add_row(*row)
        for ex, out in wrong[: args.show]:
            console.print(f"[dim]{model} wrong on[/] {task.user_message(ex).splitlines()[-1]!r}\n"
                          f"  expected {ex.answer}\n  got      {out!r}")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
