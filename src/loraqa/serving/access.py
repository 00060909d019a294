"""What one key may reach on this server: its adapters, the collections it may read, what it is
shown. The HTTP routes and the MCP tools ask here, so the rules are the same on both:

- an adapter is reachable when the server has it (loaded, or in the adapter root) and the key's
  scope names it; `base` is a name like any other; `auto` chooses only among the key's adapters;
- a collection is reachable only when the server exposes it (bound to an adapter with
  `--collection`, or `--expose-collection NAME`) and the key's scope names it;
- what is out of scope gets the same answer as what does not exist, naming nothing;
- server-side paths (the adapter root, adapter folders, the base model, the store, training data)
  reach admin keys only: other keys get them replaced (error messages, domain descriptions).
"""

from __future__ import annotations

import re
from pathlib import Path

from loraqa.errors import AdapterNotFound, LoraqaError, UnknownCollection
from loraqa.inference.answerer import AUTO, BASE, Answerer
from loraqa.inference.routing import route
from loraqa.serving.adapter_cache import AdapterCache
from loraqa.serving.scopes import Scope

HIDDEN_PATH = "<server path>"
# a path-like word of a description: anything with a slash (or backslash) in it
_PATHLIKE = re.compile(r"[^\s,;()'\"]*[/\\][^\s,;()'\"]*")


class Unavailable(AdapterNotFound):
    """An adapter or collection that does not exist or that this key may not reach: one message
    for both, naming nothing."""

    remedy = "Use an adapter or collection the key's scope lists (`GET /v1/adapters` shows them)."

    def __init__(self, what: str = "adapter"):
        super().__init__(f"no such {what} is available to this key")
        self.what = what


class UnavailableCollection(UnknownCollection):
    """A collection that does not exist or that this key may not reach: one message for both."""

    remedy = "Use a collection the key's scope lists, or ask the operator to expose it."

    def __init__(self):
        super().__init__("no such collection is available to this key")


class NoDomain(LoraqaError):
    """`auto` has nothing to choose from."""

    remedy = "Train the adapters with `loraqa train` (it writes their domain profiles), or name an adapter."

    http_status = 404


def public_source(text: str) -> str:
    """A description with every path in it cut to its last part ('/srv/data/clinical.jsonl' ->
    'clinical.jsonl'): what the data was, not where the server keeps it."""
    return _PATHLIKE.sub(lambda m: Path(m.group().rstrip("/\\")).name or HIDDEN_PATH, text)


class Access:
    def __init__(
        self,
        answerer: Answerer,
        adapter_cache: AdapterCache,
        exposed: list[str] | tuple[str, ...] = (),
        adapter_root: Path | None = None,
        store: str | Path | None = None,
    ):
        """exposed: collections reachable without being bound to an adapter."""
        self.answerer, self.adapter_cache, self.exposed = answerer, adapter_cache, frozenset(exposed)
        self.adapter_root, self.store = adapter_root, store

    # ------------------------------------------------------------ adapters

    def all_adapters(self) -> list[str]:
        """The adapters and `base`: with an adapter root also those of the root not loaded now."""
        cached = self.adapter_cache.names
        return cached + [n for n in self.answerer.names if n not in cached]

    def adapters(self, scope: Scope) -> list[str]:
        return [n for n in self.all_adapters() if scope.may_use(n)]

    def models(self, scope: Scope) -> list[str]:
        """What the key may name as `model` / `adapter` / domain."""
        return self.adapters(scope) + [AUTO]

    def exists(self, name: str) -> bool:
        return name in self.answerer.names or self.adapter_cache.knows(name)

    def adapter(self, scope: Scope, requested: str | None) -> str:
        """The adapter a request names (default: the first the key may use), checked; `auto` is
        left for route()."""
        if requested is None:
            mine = self.adapters(scope)
            default = self.answerer.default_adapter()
            requested = default if default in mine else (mine[0] if mine else None)
            if requested is None:
                raise Unavailable()
        if requested == AUTO:
            return AUTO
        if not (scope.may_use(requested) and self.exists(requested)):
            raise Unavailable()
        return requested

    def profiles(self, scope: Scope) -> dict:
        found = self.adapter_cache.profiles()
        return {n: p for n, p in found.items() if scope.may_use(n)}

    def profile(self, name: str):
        """The adapter's domain profile, loaded or only in the adapter root (None: it has none)."""
        adapter = self.answerer.adapter(name)
        if adapter is not None:
            return adapter.profile
        entry = self.adapter_cache.catalogue.get(name)
        return entry.profile if entry is not None else None

    def route(self, scope: Scope, question: str, context: str | None) -> tuple[str, float]:
        """`auto`: the key's adapter whose domain best matches the question."""
        chosen = route(self.profiles(scope), question, context)
        if chosen is None:
            raise NoDomain(
                f"'{AUTO}' chooses among adapters with a domain profile (written by `loraqa train`), and "
                "none available to this key has one"
            )
        return chosen

    def describe(self, name: str, scope: Scope) -> str | None:
        """The adapter's domain description: training data named without its folders unless the
        key is an admin's."""
        profile = self.profile(name)
        if profile is None:
            return None
        text = profile.describe()
        return text if scope.admin else public_source(text)

    # ------------------------------------------------------------ collections

    def bound(self, adapter: str) -> str | None:
        loaded = self.answerer.adapter(adapter)
        return loaded.collection if loaded is not None else None

    def exposed_collections(self) -> set[str]:
        bound = {a.collection for a in self.answerer.registry.adapters.values() if a.collection}
        return bound | set(self.exposed)

    def collections(self, scope: Scope) -> list[str]:
        return sorted(c for c in self.exposed_collections() if scope.may_read(c))

    def collection(self, scope: Scope, name: str) -> str:
        if name not in self.exposed_collections() or not scope.may_read(name):
            raise UnavailableCollection()
        return name

    def reading(self, scope: Scope, adapter: str, collection: str | None, context: str | None) -> str | None:
        """The collection a question will read (a named one, or its adapter's when it comes
        without a passage), checked; None when it reads none."""
        if collection is not None:
            return self.collection(scope, collection)
        if context is None and adapter not in (AUTO,):
            bound = self.bound(adapter)
            if bound is not None:
                return self.collection(scope, bound)
        return None

    # ------------------------------------------------------------ what a reply may say

    def secrets(self) -> list[str]:
        """Server-side paths, as given and resolved, longest first."""
        found: set[str] = set()

        def add(value) -> None:
            if value:
                found.add(str(value))
                try:
                    found.add(str(Path(value).resolve()))
                except (OSError, RuntimeError, ValueError):
                    pass

        add(self.adapter_root)
        add(self.store)
        if self.answerer.base_model and (Path(self.answerer.base_model).exists() or "/" in self.answerer.base_model):
            add(self.answerer.base_model)
        for adapter in self.answerer.registry.adapters.values():
            add(adapter.source)
            add(adapter.ref.run_dir)
        for entry in self.adapter_cache.catalogue.values():
            add(entry.folder)
        return sorted((f for f in found if len(f) > 1), key=len, reverse=True)

    def redact(self, message: str, scope: Scope | None) -> str:
        if scope is not None and scope.admin:
            return message
        for path in self.secrets():
            message = message.replace(path, HIDDEN_PATH)
        return message

    def error(self, exc: LoraqaError, scope: Scope | None) -> str:
        """What a key is told of an error: not-found errors say nothing of what exists."""
        if isinstance(exc, (Unavailable, UnavailableCollection)):
            return str(exc)
        if isinstance(exc, UnknownCollection):
            return str(UnavailableCollection())
        if isinstance(exc, AdapterNotFound) and not (scope is not None and scope.admin):
            return str(Unavailable())
        return self.redact(str(exc), scope)


__all__ = ["BASE", "Access", "Unavailable", "UnavailableCollection", "public_source"]
