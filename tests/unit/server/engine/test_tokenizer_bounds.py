"""The bundled model's tokenizer with a token limit: a text over it is refused from a
count taken chunk by chunk (its lower bound never above the true count), a text within
it tokenizes exactly as without a limit, and the refusal of a huge text costs little."""

from __future__ import annotations

from pathlib import Path

import pytest
from hotswap.server.engine.interface import PromptTooLong


@pytest.fixture(scope="module")
def tokenizer(base_model_dir: Path):  # type: ignore[no-untyped-def]
    from hotswap.server.engine.hf_tokenizer import HfTokenizer
    from transformers import AutoTokenizer

    return HfTokenizer(AutoTokenizer.from_pretrained(base_model_dir))


TEXTS = {
    "prose": "lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 3000,
    "digits": "".join(str(i) for i in range(40_000)),
    "specials": "<|im_start|>user\nhi<|im_end|>\n" * 6000,
    "spaces": ("x" + " " * 37) * 5000,
}


@pytest.mark.parametrize("kind", sorted(TEXTS))
def test_lower_bound_never_above_the_true_count(tokenizer, kind: str) -> None:  # type: ignore[no-untyped-def]
    text = TEXTS[kind]
    true_count = len(tokenizer.encode(text))
    with pytest.raises(PromptTooLong) as refused:
        tokenizer.encode(text, limit=1000)
    assert 1000 < refused.value.at_least <= true_count
    # Within the limit, the ids are exactly the unlimited ones.
    assert tokenizer.encode(text, limit=true_count) == tokenizer.encode(text)


def test_chat_template_is_bounded_too(tokenizer) -> None:  # type: ignore[no-untyped-def]
    messages = [{"role": "user", "content": TEXTS["prose"]}]
    whole = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    with pytest.raises(PromptTooLong) as refused:
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, limit=2000)
    assert 2000 < refused.value.at_least <= len(whole)
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                         limit=len(whole)) == whole


def test_a_huge_text_is_refused_from_its_first_chunks(base_model_dir: Path) -> None:
    from hotswap.server.engine.hf_tokenizer import COUNT_CHUNK_CHARS, HfTokenizer
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(base_model_dir)
    seen: list[int] = []

    class Spy:
        """The HF tokenizer, counting the characters it is asked to tokenize."""

        def encode(self, text: str, **kwargs: object) -> list[int]:
            seen.append(len(text))
            return list(hf.encode(text, **kwargs))

    text = "lorem ipsum dolor " * 50_000  # 900 kB, ~350,000 tokens
    with pytest.raises(PromptTooLong):
        HfTokenizer(Spy()).encode(text, limit=8191)
    # A few chunks (~2.6 characters a token here), never the 900 kB.
    assert sum(seen) <= 2 * COUNT_CHUNK_CHARS
    assert max(seen) <= COUNT_CHUNK_CHARS
