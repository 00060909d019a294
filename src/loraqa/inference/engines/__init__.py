"""The engines that run a model for the Answerer, behind one declared interface.

An engine holds a model (or one per adapter), attaches and detaches adapters by name, and
generates the answers of a batch of windows, each row with its own adapter. What an engine can
do beyond that is declared in its `Capabilities`; callers ask for a capability, never for an
engine by its name, and no engine implements a method by refusing it.

- pytorch.py: one base model in memory, LoRA adapters attached by name (PEFT).
- ct2.py: one CTranslate2 translator per exported (merged) adapter.
"""

from __future__ import annotations

from loraqa.errors import UsageError, option
from loraqa.inference.engines.base import BASE, ENGINE_MARKERS, Capabilities, Engine, GenerationBatch, TeacherForcing

__all__ = [
    "BASE",
    "ENGINES",
    "ENGINE_MARKERS",
    "Capabilities",
    "Engine",
    "GenerationBatch",
    "TeacherForcing",
    "capabilities_of",
    "create_engine",
]

ENGINES = ("pytorch", "ctranslate2")


def engine_type(kind: str) -> type[Engine]:
    # imported when asked for: the CTranslate2 engine needs neither torch nor PEFT
    if kind == "pytorch":
        from loraqa.inference.engines.pytorch import TorchEngine

        return TorchEngine
    if kind == "ctranslate2":
        from loraqa.inference.engines.ct2 import CT2Engine

        return CT2Engine
    raise UsageError(f"{option('engine')} must be one of {', '.join(ENGINES)}, got '{kind}'")


def capabilities_of(kind: str) -> Capabilities:
    """What an engine kind can do, before one is built (e.g. to refuse --baseline at once)."""
    return engine_type(kind).capabilities


def create_engine(
    kind: str, tokenizer, base_model: str | None, device: str = "auto", dtype: str = "auto", allow_pickle: bool = False
) -> Engine:
    """An engine of `kind`; the PyTorch one loads `base_model` now, CTranslate2 loads each adapter's
    own merged model when it is attached."""
    return engine_type(kind).create(
        tokenizer=tokenizer, base_model=base_model, device=device, dtype=dtype, allow_pickle=allow_pickle
    )
