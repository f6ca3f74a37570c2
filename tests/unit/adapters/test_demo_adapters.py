"""The demo adapters `make serve` registers (examples/adapters/: both demo tasks, every
PEFT family) pass admission against the bundled model as the server configures it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hotswap.adapters.admission import AdmissionLimits, admit
from hotswap.server.base_model import read_base_spec

DEMO = Path(__file__).resolve().parents[3] / "examples" / "adapters"
FAMILIES = {"extract-person": "LORA", "extract-person-prompt": "PROMPT_TUNING",
            "extract-person-ptuning": "P_TUNING", "extract-person-prefix": "PREFIX_TUNING",
            "route-ticket": "LORA", "route-ticket-prompt": "PROMPT_TUNING",
            "route-ticket-ptuning": "P_TUNING"}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_demo_adapter_is_admitted(base_model_dir: Path, name: str) -> None:
    spec = read_base_spec(str(base_model_dir))
    assert spec is not None
    limits = AdmissionLimits(peft_types=frozenset(FAMILIES.values()))
    report = admit(DEMO / name, spec, limits)
    assert report.peft_type == FAMILIES[name]
    if report.peft_type != "LORA":
        assert report.num_virtual_tokens == 20


def test_every_demo_adapter_is_served_by_make_serve() -> None:
    makefile = (DEMO.parents[1] / "Makefile").read_text()
    assert sorted(p.name for p in DEMO.iterdir() if p.is_dir()) == sorted(FAMILIES)
    value = makefile.split("DEMO_ADAPTERS =", 1)[1].split("\n\n", 1)[0]
    assert sorted(value.replace("\\\n", " ").split()) == sorted(FAMILIES)
