"""The loaded adapters: one object per adapter, validated when loaded, attached all-or-nothing.

Everything that asks about adapters reads this registry: the Answerer (reading settings,
thresholds), automatic choice (domain profiles), every HTTP route and the MCP tools (names,
descriptions). A name is checked in one place (`choose`), reserved names in another (`check_name`).

Loading is split in two so a server can do the slow, file-reading half off its model thread:
`prepare` reads and validates every file (config, calibration, profile, weight shapes, file
types, pickle) without touching the engine; `attach` hands the prepared adapter to the engine
and only then makes it visible. Unloading is split the same way: `hide` makes the name unknown to
new requests at once, `detach` frees it once nothing in flight uses it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from loraqa.adapters.folder import AdapterRef, check_regular_files, resolve_adapter
from loraqa.adapters.names import NAME_PATTERN
from loraqa.domain_profile import DomainProfile
from loraqa.errors import AdapterExists, AdapterNotFound, LoraqaError, UsageError
from loraqa.inference.engines import BASE, ENGINE_MARKERS, Engine
from loraqa.inference.reading import WindowShape
from loraqa.inference.routing import AUTO, route
from loraqa.modeling.files import refuse_pickle

log = logging.getLogger("loraqa")

RESERVED = frozenset({BASE, AUTO, *ENGINE_MARKERS})


def check_name(name: str) -> None:
    """Adapter names: 1-64 letters, digits, '.', '_' or '-'; not a reserved name."""
    if name in RESERVED:
        meaning = {BASE: "the base model without an adapter", AUTO: "automatic adapter choice"}.get(
            name, "used inside the engine"
        )
        raise UsageError(f"'{name}' is a reserved name ({meaning}); name the adapter otherwise")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise UsageError(
            f"adapter name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


@dataclass(frozen=True)
class ReadingSettings:
    """How an adapter reads a question: from the config it was trained with."""

    template: str
    max_source: int
    overlap: int
    max_new_tokens: int
    no_answer_text: str | None
    extractive: bool = False
    threshold: float | None = None
    top_k: int = 5  # passages read when the question comes without one (from a collection)
    min_score: float = 0.0
    passage_weight: float = 1.0  # the search score's weight when choosing among retrieved passages' answers
    mode: str = "auto"  # how its collection is searched (retrieval.mode)
    rerank_model: str | None = None  # a cross-encoder re-scoring the search's best rerank_candidates
    rerank_candidates: int = 20

    @property
    def shape(self) -> WindowShape:
        return WindowShape(self.template, self.max_source, self.overlap, self.extractive)

    @classmethod
    def of(cls, ref: AdapterRef) -> ReadingSettings:
        c = ref.config
        return cls(
            c.data.template,
            c.data.max_source_length,
            c.data.window_overlap,
            c.eval.max_new_tokens,
            c.data.unanswerable_text,
            c.eval.extractive,
            ref.no_answer_threshold,
            c.retrieval.top_k,
            c.retrieval.min_score,
            c.retrieval.passage_weight,
            c.retrieval.mode,
            c.retrieval.rerank_model,
            c.retrieval.rerank_candidates,
        )

    @classmethod
    def for_base(cls, has_context: bool) -> ReadingSettings:
        """The bare base model, when no adapter says how to prompt it."""
        return cls("squad" if has_context else "question", 512, 128, 32, None)


@dataclass(frozen=True)
class LoadedAdapter:
    name: str
    ref: AdapterRef
    settings: ReadingSettings
    profile: DomainProfile | None  # None: automatic choice never picks it
    collection: str | None = None  # questions asked without a passage are answered from this collection

    @property
    def source(self) -> Path:
        return self.ref.adapter_dir

    def describe(self) -> str:
        return self.profile.describe() if self.profile else f"adapter '{self.name}'"


class AdapterRegistry:
    def __init__(self, engine: Engine, allow_pickle: bool = False, max_adapters: int | None = None):
        self.engine, self.allow_pickle, self.max_adapters = engine, allow_pickle, max_adapters
        self.adapters: dict[str, LoadedAdapter] = {}  # visible: requests may name them
        self.hidden: dict[str, LoadedAdapter] = {}  # being unloaded: still attached, no new requests
        self.warned: set[str] = (
            set()
        )  # adapters already said to have no domain profile (the adapter cache reloads them)

    # ------------------------------------------------------------ loading

    def prepare(
        self,
        name: str,
        target: str | Path | AdapterRef,
        max_bytes: int | None = None,
        collection: str | None = None,
        check_room: bool = True,
    ) -> LoadedAdapter:
        """Read and check everything about an adapter without touching the engine. check_room:
        refuse it now when no room is left (a caller that makes room before attaching says no)."""
        check_name(name)
        if check_room:
            self._check_room(name)
        ref = target if isinstance(target, AdapterRef) else resolve_adapter(target)
        check_regular_files(ref, max_bytes)
        if ref.kind == "lora":
            refuse_pickle(ref.adapter_dir, "adapter", self.allow_pickle, any_present=True)
        settings = ReadingSettings.of(ref)
        if settings.extractive and not self.engine.capabilities.extractive:
            raise LoraqaError("eval.extractive needs the PyTorch engine: this engine decodes without constraints")
        self.engine.check(ref)
        return LoadedAdapter(name, ref, settings, DomainProfile.read(ref.adapter_dir), collection)

    def attach(self, adapter: LoadedAdapter) -> None:
        """Attach a prepared adapter; it is visible only once the engine holds all of it."""
        self._check_room(adapter.name)
        try:
            self.engine.attach(adapter.name, adapter.ref)
        except BaseException:
            self.engine.detach(adapter.name)  # whatever the engine kept of it
            raise
        self.adapters[adapter.name] = adapter
        if adapter.profile is None and adapter.name not in self.warned:
            self.warned.add(adapter.name)
            log.warning(
                f"adapter '{adapter.name}' has no domain profile ({adapter.source}/loraqa_domain.json, written "
                f"by `loraqa train`): `{AUTO}` will never choose it"
            )

    def load(self, name: str, target: str | Path | AdapterRef, collection: str | None = None) -> LoadedAdapter:
        adapter = self.prepare(name, target, collection=collection)
        self.attach(adapter)
        return adapter

    def _check_room(self, name: str) -> None:
        if name in self.adapters or name in self.hidden:
            raise AdapterExists(f"an adapter named '{name}' is already loaded; delete it first or pick another name")
        if self.max_adapters is not None and len(self.adapters) + len(self.hidden) >= self.max_adapters:
            raise AdapterExists(f"{self.max_adapters} adapters are loaded, the most allowed; unload one first")

    # ------------------------------------------------------------ unloading

    def hide(self, name: str) -> LoadedAdapter:
        """New requests naming it get 404 from now on; it stays attached for the windows in flight."""
        if name not in self.adapters:
            raise AdapterNotFound(f"no adapter named '{name}' is loaded")
        adapter = self.hidden[name] = self.adapters.pop(name)
        return adapter

    def detach(self, name: str) -> None:
        self.engine.detach(name)
        self.hidden.pop(name, None)

    def unload(self, name: str) -> None:
        self.hide(name)
        self.detach(name)

    # ------------------------------------------------------------ asking

    @property
    def names(self) -> list[str]:
        """What a request may name: the loaded adapters, then `base` when the engine has one."""
        return list(self.adapters) + ([BASE] if self.engine.capabilities.base_model else [])

    def is_attached(self, name: str) -> bool:
        """Answerable now: visible, being unloaded (windows in flight), or the base model."""
        return name in self.adapters or name in self.hidden or (name == BASE and self.engine.capabilities.base_model)

    def default(self) -> str:
        return next(iter(self.adapters), BASE)

    def get(self, name: str) -> LoadedAdapter | None:
        """The loaded adapter of that name (None for the base model)."""
        return self.adapters.get(name) or self.hidden.get(name)

    def choose(self, requested: str | None, question: str, context: str | None) -> tuple[str, float | None]:
        """The adapter a request names (or the default), or for `auto` the one whose domain
        profile best matches its question and passage, with that match's score."""
        name = requested or self.default()
        if name == AUTO:
            routed = route({n: a.profile for n, a in self.adapters.items() if a.profile is not None}, question, context)
            if routed is None:
                raise AdapterNotFound(
                    f"'{AUTO}' needs adapters with a domain profile (written by `loraqa train`); "
                    f"none of the loaded ones has one: {', '.join(self.names)}"
                )
            return routed
        if name not in self.names:
            raise AdapterNotFound(f"unknown adapter '{name}'; loaded: {', '.join(self.names + [AUTO])}")
        return name, None
