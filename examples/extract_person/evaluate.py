"""Score the base model and the ``extract-person`` adapter through a running hotswap server.

Uses only the official ``openai`` client and the standard chat completions API,
so it runs unchanged against hotswap, vLLM's own server or any compatible peer::

    python examples/extract_person/evaluate.py --url http://127.0.0.1:8000/v1 -n 20

The held-out sentences are the ones ``train.py`` scores with the same ``-n`` and
``--seed``, so the numbers are comparable with the adapter's README.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import openai
from openai import OpenAI
from rich.console import Console
from rich.table import Table
from task import Example, build_messages, is_correct, make_examples

# As in train.py: ample for the ~20-token answer, a cap on a rambling base model.
MAX_TOKENS = 48

console = Console()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000/v1", help="OpenAI base URL")
    p.add_argument("--base-model", default="SmolLM2-135M-Instruct", help="served base model name")
    p.add_argument("--adapter", default="extract-person", help="served adapter name")
    p.add_argument("-n", type=int, default=20, help="held-out sentences to score")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight per model")
    p.add_argument("--api-key", default=None,
                   help="API key (default: $HOTSWAP_API_KEY, $OPENAI_API_KEY, or none)")
    p.add_argument("--show", type=int, default=3, help="wrong answers to print per model")
    return p.parse_args(argv)


def complete(client: OpenAI, model: str, example: Example) -> str:
    response = client.chat.completions.create(
        model=model,
        messages=build_messages(example),  # type: ignore[arg-type]  # plain dicts are valid
        temperature=0,  # greedy, as train.py scores; makes runs repeatable
        max_tokens=MAX_TOKENS,
    )
    return response.choices[0].message.content or ""


def run(
    client: OpenAI, model: str, examples: Sequence[Example], concurrency: int
) -> list[str]:
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(lambda ex: complete(client, model, ex), examples))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    api_key = args.api_key or os.environ.get("HOTSWAP_API_KEY") or os.environ.get(
        "OPENAI_API_KEY", "none"  # the client insists on a key; an open server ignores it
    )
    client = OpenAI(base_url=args.url, api_key=api_key, max_retries=0)
    examples = make_examples(args.n, "heldout", args.seed)

    table = Table(title=f"extract-person, {args.n} held-out sentences, temperature 0")
    table.add_column("model")
    table.add_column("exact matches", justify="right")
    # One model at a time: each score then comes from requests for that model only,
    # which is what "base vs adapter" means.
    for model in (args.base_model, args.adapter):
        try:
            with console.status(f"Querying {model} at {args.url}"):
                outputs = run(client, model, examples, args.concurrency)
        except openai.APIConnectionError as exc:
            console.print(f"[red]Cannot reach {args.url} ({exc}) Is the server running?[/]")
            return 2
        except openai.APIStatusError as exc:
            console.print(f"[red]{model}: {exc.message}[/]")
            return 2
        wrong = [(ex, out) for ex, out in zip(examples, outputs, strict=True)
                 if not is_correct(ex, out)]
        table.add_row(model, f"{len(examples) - len(wrong)}/{len(examples)}")
        for ex, out in wrong[: args.show]:
            console.print(f"[dim]{model} wrong on[/] {ex.sentence!r}\n"
                          f"  expected {ex.answer}\n  got      {out!r}")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
