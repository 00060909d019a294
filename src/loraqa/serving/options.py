"""What a server is started with, as two objects from the command line down: the models it
loads (`ServedModels`) and how it serves them (`ServeOptions`: keys, address, batching, limits,
the adapter root, collections). One object per concern, so a new option is one field, and two
options of one type can never be passed in each other's place."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from loraqa.inference.answerer import Answerer
from loraqa.inference.library import CollectionSettings
from loraqa.serving.limits import ServerLimits


@dataclass
class ServeOptions:
    api_key: str | None = None  # asks questions
    admin_key: str | None = None  # also loads and unloads adapters, from adapter_root only
    keys_file: str | Path | None = None  # keys with scopes (serving/scopes.py), beside the two above
    host: str = "127.0.0.1"  # the address served on; the Host names answered to follow from it
    port: int | None = None  # HTTP port (MCP: None serves over stdio)
    allowed_host: list[str] = field(default_factory=list)  # more Host names answered to
    cors_origins: list[str] = field(default_factory=list)
    window_ms: float = 10.0  # how long a batch waits for more requests
    max_batch: int = 32
    max_batch_tokens: int = 8192
    limits: ServerLimits = field(default_factory=ServerLimits)
    adapter_root: str | Path | None = None  # every adapter in it may be asked for, loaded on demand
    max_loaded: int | None = None  # at most this many attached (default: the adapter limit)
    pin: list[str] = field(default_factory=list)  # adapters of the root never detached
    expose_collections: list[str] = field(default_factory=list)  # reachable without an adapter bound to them
    store: str | Path | None = None  # where collections live


@dataclass
class ServedModels:
    adapters: dict[str, str] = field(default_factory=dict)  # name -> run directory or adapter folder
    base_model: str | None = None
    engine: str = "pytorch"
    allow_pickle: bool = False
    collections: dict[str, str] = field(default_factory=dict)  # adapter -> the collection it answers from

    def load(self, options: ServeOptions) -> Answerer:
        """The Answerer, within the server's limits (adapters, query sizes)."""
        return Answerer(
            self.adapters,
            base_model=self.base_model,
            allow_pickle=self.allow_pickle,
            engine=self.engine,
            max_adapters=options.limits.max_adapters,
            collections=CollectionSettings(options.store, self.collections, options.limits.query_limits),
        )
