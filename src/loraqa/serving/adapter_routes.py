"""Listing, loading and unloading adapters while the server runs.

Loading needs the admin key and reads only from the server's adapter root (`--adapter-root DIR`):
the path a client sends is resolved (symlinks followed) and must stay inside the root, and so
must every file the adapter's folder holds. A path outside it, one that does not exist and one
that holds no adapter all get the same answer, so the endpoint tells nothing about the rest of
the filesystem. The folder is checked (regular files only, size, pickle, fit to the base model,
calibration and profile) on a worker thread, then attached on the model thread between batches:
a failing load leaves the loaded adapters as they were, and answering never waits on a file.

Unloading hides the name at once (new requests get 404), waits without blocking for the windows
already queued or running for it, then detaches it on the model thread, between batches.
"""

# No `from __future__ import annotations` here: FastAPI reads the annotations of the handlers
# at run time to tell a Request or a body model from a query parameter.
import asyncio

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from loraqa.adapters.names import NAME_PATTERN
from loraqa.adapters.root import find_in_root
from loraqa.errors import LoraqaError
from loraqa.serving.context import ApiError, is_admin, key_scope, state

router = APIRouter()


class AdapterLoad(BaseModel):
    name: str = Field(..., min_length=1, max_length=64, pattern=NAME_PATTERN.pattern)
    path: str = Field(
        ...,
        min_length=1,
        max_length=1024,
        description="A folder inside the server's adapter root (relative to it, or absolute).",
    )
    collection: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="The collection its questions without a passage are answered from.",
    )


@router.get("/v1/adapters")
async def list_adapters(request: Request):
    """The adapters the key may use; where each was loaded from only for an admin key."""
    s, admin, scope = state(request), is_admin(request), key_scope(request)
    registry = s.answerer.registry

    def entry(name: str) -> dict:
        adapter = registry.get(name)
        item = {
            "name": name,
            "template": adapter.settings.template if adapter else None,
            "domain": s.access.describe(name, scope),
            "collection": adapter.collection if adapter else None,
            "loaded": registry.is_attached(name),
        }
        if admin:
            where = (
                adapter.source
                if adapter
                else (s.adapter_cache.catalogue[name].folder if name in s.adapter_cache.catalogue else None)
            )
            item["path"] = str(where) if where else None
        return item

    mine = s.access.adapters(scope)
    default = s.answerer.default_adapter()
    return {
        "default": default if default in mine else (mine[0] if mine else None),
        "base_model": s.answerer.base_model if admin else None,
        "adapters": [entry(n) for n in mine],
    }


def _not_on_replicas(s) -> None:
    """Through Ray each model replica keeps its own adapters, loaded on demand from the root: one
    replica's load or unload by hand would be a lottery for the next request."""
    if getattr(s.batcher, "remote", False):
        raise ApiError(
            405,
            "adapters are loaded on demand by each model replica on this server (Ray): ask for any "
            "adapter of the adapter root by name; copy a new one into the root to add it",
        )


@router.post("/v1/adapters", status_code=201)
async def load_adapter(request: Request, req: AdapterLoad):
    s = state(request)
    root = s.adapter_root
    if root is None:
        raise ApiError(403, "hot loading is off: the server was started without an adapter root")
    _not_on_replicas(s)
    registry = s.answerer.registry

    def prepare():
        ref = find_in_root(root, req.path)
        if req.collection is not None:
            s.answerer.library.open(req.collection)  # an unknown collection: 404 before anything loads
            # binding it exposes it: the admin chose to
        return registry.prepare(req.name, ref, max_bytes=s.limits.max_adapter_mb * 2**20, collection=req.collection)

    try:
        prepared = await asyncio.to_thread(prepare)
        await s.batcher.on_model_thread(registry.attach, prepared)
    except LoraqaError as exc:
        raise ApiError.of(exc, request) from None
    return {"loaded": req.name, "adapters": s.answerer.names}


@router.delete("/v1/adapters/{name}")
async def unload_adapter(request: Request, name: str):
    s = state(request)
    _not_on_replicas(s)
    registry = s.answerer.registry
    try:
        registry.hide(name)
    except LoraqaError as exc:
        raise ApiError.of(exc, request) from None
    await s.batcher.drained(name)
    await s.batcher.on_model_thread(registry.detach, name)
    return {"unloaded": name, "adapters": s.answerer.names}
