"""Every sampling field the server accepts changes the answer on the real engine (the
same request without the field is the control), and fields it does not take are 400s
that name them: nothing accepted is silently ignored."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from support.server import ServerInfo

pytestmark = pytest.mark.engine

STORY = "Once upon a time, in a small village by the sea,"


def client(server: ServerInfo) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key or "unused",
                         max_retries=0)


def complete(server: ServerInfo, **fields: Any) -> tuple[str, list[int], str | None]:
    """Text, token ids and finish reason of one completion of STORY (greedy unless the
    fields say otherwise); vLLM-style extras go in the body as they are."""
    body: dict[str, Any] = {"temperature": 0, "max_tokens": 40, "return_token_ids": True,
                            **fields}
    known = {"temperature", "max_tokens", "seed", "stop", "presence_penalty",
             "frequency_penalty", "logit_bias", "top_p", "n"}
    resp = client(server).completions.create(
        model=server.base_name, prompt=body.pop("prompt", STORY),
        **{k: v for k, v in body.items() if k in known},
        extra_body={k: v for k, v in body.items() if k not in known})
    choice = resp.choices[0]
    return choice.text, list(choice.token_ids or []), choice.finish_reason  # type: ignore[attr-defined]


def test_logit_bias_bans_the_greedy_first_token(server: ServerInfo) -> None:
    _, ids, _ = complete(server, max_tokens=3)
    _, biased, _ = complete(server, max_tokens=3, logit_bias={str(ids[0]): -100})
    assert biased[0] != ids[0]


@pytest.mark.parametrize("field,value", [
    ("presence_penalty", 2.0), ("frequency_penalty", 2.0), ("repetition_penalty", 1.8),
])
def test_penalties_change_a_greedy_answer(server: ServerInfo, field: str, value: float) -> None:
    plain, _, _ = complete(server, max_tokens=80)
    assert complete(server, max_tokens=80, **{field: value})[0] != plain


def test_seed_makes_sampling_repeatable(server: ServerInfo) -> None:
    seeded = {complete(server, temperature=1.0, seed=7)[0] for _ in range(2)}
    unseeded = {complete(server, temperature=1.0)[0] for _ in range(3)}
    assert len(seeded) == 1
    assert len(unseeded) > 1
    assert complete(server, temperature=1.0, seed=8)[0] not in seeded


@pytest.mark.parametrize("field,value", [("top_k", 1), ("min_p", 1.0)])
def test_top_k_and_min_p_narrow_sampling_to_greedy(server: ServerInfo, field: str,
                                                   value: float) -> None:
    greedy, _, _ = complete(server)
    hot = {"temperature": 2.0, "seed": 3}
    assert complete(server, **hot)[0] != greedy  # the control: sampling hot differs
    assert complete(server, **hot, **{field: value})[0] == greedy


def test_stop_and_include_stop_str_in_output(server: ServerInfo) -> None:
    text, _, _ = complete(server)
    word = text.split()[3]
    cut, _, finish = complete(server, stop=[word])
    assert word not in cut and finish == "stop"
    kept, _, _ = complete(server, stop=[word], include_stop_str_in_output=True)
    assert kept == cut + word


def test_stop_token_ids(server: ServerInfo) -> None:
    _, ids, _ = complete(server)
    _, cut, finish = complete(server, stop_token_ids=[ids[4]])
    assert finish == "stop" and len(cut) < len(ids)
    assert cut == ids[:len(cut)]


def test_min_tokens_keeps_a_short_answer_going(server: ServerInfo) -> None:
    oai = client(server)
    short = [{"role": "user", "content": "Reply with the single word: yes"}]
    plain = oai.chat.completions.create(model=server.base_name, messages=short,  # type: ignore[arg-type]
                                        temperature=0, max_tokens=100)
    assert plain.usage is not None and plain.choices[0].finish_reason == "stop"
    wanted = plain.usage.completion_tokens + 10  # past where the model ends by itself
    longer = oai.chat.completions.create(model=server.base_name, messages=short,  # type: ignore[arg-type]
                                         temperature=0, max_tokens=100,
                                         extra_body={"min_tokens": wanted})
    assert longer.usage is not None and longer.usage.completion_tokens >= wanted


def test_skip_special_tokens(server: ServerInfo) -> None:
    # A bias forces <|im_start|> (a special token of the bundled model); the text shows
    # it only with skip_special_tokens false.
    forced = {"logit_bias": {"1": 100}, "max_tokens": 2}
    skipped, ids, _ = complete(server, **forced)
    shown, _, _ = complete(server, **forced, skip_special_tokens=False)
    assert ids[0] == 1
    assert "<|im_start|>" not in skipped
    assert "<|im_start|>" in shown


def test_unknown_fields_are_400_and_named(server: ServerInfo) -> None:
    oai = client(server)
    with pytest.raises(openai.BadRequestError) as err:
        oai.completions.create(model=server.base_name, prompt="x", max_tokens=1,
                               extra_body={"best_of_n_fancy": 3, "guided_thing": "y"})
    message = str(err.value)
    assert "best_of_n_fancy" in message and "guided_thing" in message
    with pytest.raises(openai.BadRequestError, match="store"):
        oai.chat.completions.create(model=server.base_name, max_tokens=1, store=True,
                                    messages=[{"role": "user", "content": "x"}])
    # The documented no-ops pass.
    resp = oai.chat.completions.create(
        model=server.base_name, max_tokens=1, user="u-1", metadata={"team": "a"},
        store=False, messages=[{"role": "user", "content": "x"}])
    assert resp.choices


def test_out_of_vocabulary_logit_bias_is_400(server: ServerInfo) -> None:
    with pytest.raises(openai.BadRequestError, match="logit_bias"):
        complete(server, logit_bias={"10000000": 1})
