"""What an adapter must pass before the store accepts it for this base model.

:func:`admit` inspects a staged adapter directory and either returns an
:class:`AdmissionReport` or raises one :class:`~hotswap.adapters.errors.AdmissionError`
subclass naming the failed check. It never writes, and it never unpickles anything
(:mod:`.files` reads weights only through ``safetensors``).

The pipeline (:mod:`.pipeline`) runs the checks cheapest first:

1. the files: names, count and sizes (an oversized model card is dropped); no pickles
   (:mod:`.files`);
2. ``adapter_config.json``: a JSON object, finite numbers, bounded nesting, whose
   ``peft_type`` has a rule and is enabled;
3. the safetensors header: float dtypes, then the rule checks config values (types and
   ranges), tensor names and shapes against the :class:`BaseModelSpec` (:mod:`.base_model`);
4. ``hotswap.json``, if there is one: the task defaults, strictly
   (:mod:`hotswap.adapters.defaults`);
5. only then tensor values: no NaN/Inf.

:class:`AdmissionLimits` (the server's policy) and :class:`AdmissionReport` (the result)
are in :mod:`.limits`; :func:`fitted_limits` (:mod:`.budget`) lowers the byte cap to the
largest adapter the base model can have.

PEFT types are pluggable: a :class:`PeftRule` (:mod:`.rule`) per ``peft_type`` in
:data:`RULES` (:mod:`.lora`, :mod:`.prompt`). A type is admitted only if it has a rule
*and* the server enables it in :attr:`AdmissionLimits.peft_types` (LoRA only by default,
because the engine serves only LoRA so far; the prompt-learning rules are ready for when
it serves more).
"""

from .base_model import LLAMA_LAYOUT_MODEL_TYPES, BaseModelSpec, ModuleShape
from .budget import fitted_limits, max_adapter_bytes
from .files import (
    CARD_FILE,
    CONFIG_FILE,
    FLOAT_DTYPE_BYTES,
    FLOAT_DTYPES,
    KEPT_FILES,
    MAX_CARD_BYTES,
    MAX_CONFIG_BYTES,
    PICKLE_SUFFIXES,
    WEIGHTS_FILE,
    TensorInfo,
)
from .limits import AdmissionLimits, AdmissionReport
from .lora import UNSUPPORTED_MODULES, LoraRule
from .pipeline import RULES, admit
from .prompt import PrefixTuningRule, PromptTuningRule
from .rule import PeftRule, RuleResult

__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "FLOAT_DTYPES",
    "FLOAT_DTYPE_BYTES",
    "KEPT_FILES",
    "LLAMA_LAYOUT_MODEL_TYPES",
    "MAX_CARD_BYTES",
    "MAX_CONFIG_BYTES",
    "PICKLE_SUFFIXES",
    "RULES",
    "UNSUPPORTED_MODULES",
    "WEIGHTS_FILE",
    "AdmissionLimits",
    "AdmissionReport",
    "BaseModelSpec",
    "LoraRule",
    "ModuleShape",
    "PeftRule",
    "PrefixTuningRule",
    "PromptTuningRule",
    "RuleResult",
    "TensorInfo",
    "admit",
    "fitted_limits",
    "max_adapter_bytes",
]
