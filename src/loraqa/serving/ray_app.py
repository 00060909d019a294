"""loraqa's HTTP server on Ray Serve: the same routes, answered by model replicas that each hold
a few adapters, with requests sent to a replica that already holds theirs.

Two deployments. The front (`LoraqaIngress`) is loraqa's own FastAPI app, request guard and
all (keys, scopes, body limit, one 404 for out of scope and missing), whose batcher is a
RemoteBatcher: it names each request's adapter (`adapter`, OpenAI `model`, or `auto` after
routing, as `loraqa serve` does) and calls the model deployment with that adapter as the
multiplexed model id. Each model replica (`LoraqaModel`) runs loraqa's engine, batcher and
adapter cache, so mixed-adapter batches, on-demand loads and least-recently-used eviction are
the ones `loraqa serve` has; `@serve.multiplexed` only tells Ray's router which adapters each
replica holds, so it routes by affinity (its own list holds as many as the cache may load).

Ray Serve does the routing, replicas and autoscaling: LoRAX and vLLM do this for decoder LLMs
and no multi-LoRA server serves T5. The adapter root must be a folder every node sees (a shared
filesystem), and collections answered from without a passage a store every replica reaches
(PostgreSQL), as docs/how-to/ray.md says.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, fields, replace
from typing import Any

from loraqa.errors import LoraqaError, UsageError
from loraqa.optional import require_extra
from loraqa.serving.options import ServedModels, ServeOptions
from loraqa.serving.remote_batcher import RemoteBatcher, error_parts

APP_NAME = "loraqa"
MODEL_DEPLOYMENT = "LoraqaModel"
# Ray Serve writes a line per request and per call by default: the front's own metrics and logs
# say what a request did; warnings and errors still go to Ray's logs
QUIET = {"enable_access_log": False, "log_level": "WARNING"}
INGRESS_DEPLOYMENT = "LoraqaIngress"


@dataclass
class RayOptions:
    """How the app is laid out on Ray (everything else is `loraqa serve`'s own options)."""

    replicas: int = 2  # model replicas (fixed; see min/max for autoscaling)
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float = 8.0  # autoscaling's aim per replica
    replica_cpus: float = 0.75  # a model replica's share of a node's CPUs (two fit on two cores with the front)
    ingress_cpus: float = 0.25
    address: str | None = None  # a running cluster (`ray://...` or `auto`); None: start a local instance

    def checked(self) -> RayOptions:
        if self.replicas < 1:
            raise UsageError(f"--replicas must be at least 1, got {self.replicas}")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise UsageError("autoscaling needs both --min-replicas and --max-replicas")
        if self.min_replicas is not None and not 0 < self.min_replicas <= (self.max_replicas or 0):
            raise UsageError(
                f"--min-replicas must be at least 1 and at most --max-replicas "
                f"(got {self.min_replicas} and {self.max_replicas})"
            )
        if self.replica_cpus <= 0 or self.ingress_cpus <= 0:
            raise UsageError("--replica-cpus must be above 0")
        return self

    def scaling(self) -> dict[str, Any]:
        if self.min_replicas is None:
            return {"num_replicas": self.replicas}
        return {
            "autoscaling_config": {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        }


def _ray():
    """Ray with its Serve library imported (a submodule `import ray` leaves out)."""
    require_extra("ray", "serving on Ray (--ray)")
    import ray
    import ray.serve

    return ray


def _serve():
    return _ray().serve


class ModelReplica:
    """One model replica: an Answerer with loraqa's batcher and adapter cache, answering the
    questions of one adapter (the multiplexed model id) per call."""

    def __init__(self, models: ServedModels, options: ServeOptions, threads: int):
        import torch

        from loraqa.serving.app import model_side, with_root_base
        from loraqa.serving.memory import bound_kernel_cache

        torch.set_num_threads(threads)  # its share of the node, not every core (Ray leaves torch's default)
        bound_kernel_cache()
        self.answerer = with_root_base(models, options).load(options)
        self.batcher, self.metrics, self.cache = model_side(self.answerer, options)
        self.name = f"{os.uname().nodename}:{os.getpid()}"
        self.reported: dict[str, dict[str, float]] = {"loads": {}, "evictions": {}}
        self.answered: dict[str, int] = {}  # calls answered, by adapter (served())
        self.ready: asyncio.Future | None = None
        # Ray's router learns from this which adapters the replica holds; it keeps as many as the
        # cache may load beside the pinned ones (which every replica has and are never asked for)
        capacity = max(1, self.cache.max_loaded - len(self.cache.pinned)) if self.cache.root else 1

        async def hold(name: str) -> str:
            return name  # the load itself is the cache's, under the request's deadline

        self.note = _serve().multiplexed(max_num_models_per_replica=capacity)(hold)

    async def _start(self) -> None:
        """Started in the replica's own event loop, at its first call."""
        if self.ready is None:
            self.ready = asyncio.ensure_future(self._open())
        await asyncio.shield(self.ready)

    async def _open(self) -> None:
        await self.batcher.start()
        await self.cache.load_pinned()

    def _counts(self, what: str) -> dict[str, float]:
        """Loads or evictions per adapter since the last reply that said them."""
        counter = getattr(self.metrics, f"adapter_{what}")
        now = {
            s.labels["adapter"]: s.value
            for metric in counter.collect()
            for s in metric.samples
            if s.name.endswith("_total")
        }
        seen = self.reported[what]
        delta = {name: n - seen.get(name, 0.0) for name, n in now.items() if n > seen.get(name, 0.0)}
        self.reported[what] = now
        return delta

    async def answer(self, requests: list[dict], request_id: str, timeout: float) -> dict:
        await self._start()
        adapter = _serve().get_multiplexed_model_id()
        if adapter and adapter not in self.cache.pinned:
            await self.note(adapter)
        answers, error = [], None
        try:
            async with self.cache.hold({r["adapter"] for r in requests}, timeout):
                answers = await self.batcher.submit(requests, request_id, timeout)
        except LoraqaError as exc:
            error = error_parts(exc)
        self.answered[adapter] = self.answered.get(adapter, 0) + 1
        return {
            "answers": answers,
            "error": error,
            "replica": self.name,
            "loaded": len(self.answerer.registry.adapters),
            "loads": self._counts("loads"),
            "evictions": self._counts("evictions"),
        }

    def served(self) -> dict[str, int]:
        """Calls this replica answered, by adapter (the multiplexed id; '' for the base model)."""
        return dict(self.answered)

    def check_health(self) -> None:
        if self.ready is not None and self.ready.done() and not self.batcher.alive:
            raise RuntimeError("the batcher of this replica stopped")


class IngressReplica:
    """The front: loraqa's app with its answers asked of the model deployment."""

    def __init__(self, model: Any, models: ServedModels, options: ServeOptions):
        self.model, self.models, self.options = model, models, options

    def __serve_build_asgi_app__(self):
        from loraqa.serving.app import create_app, with_root_base

        # the front loads the base model's tokenizer and catalogue too (the routes read them); it
        # runs no model call
        answerer = with_root_base(self.models, self.options).load(self.options)
        return create_app(answerer, self.options, remote=RemoteBatcher(self.model, self.options.limits))


def build(models: ServedModels, options: ServeOptions, ray_options: RayOptions | None = None):
    """The Ray Serve application: the front bound to the model deployment."""
    serve = _serve()
    r = (ray_options or RayOptions()).checked()
    threads = max(1, math.ceil(r.replica_cpus))
    model = serve.deployment(
        ModelReplica,
        name=MODEL_DEPLOYMENT,
        ray_actor_options={"num_cpus": r.replica_cpus},
        max_ongoing_requests=max(64, options.max_batch * 4),
        health_check_period_s=10,
        logging_config=QUIET,
        **r.scaling(),
    )
    ingress = serve.deployment(
        serve.ingress()(IngressReplica),
        name=INGRESS_DEPLOYMENT,
        ray_actor_options={"num_cpus": r.ingress_cpus},
        max_ongoing_requests=1000,
        logging_config=QUIET,
    )
    # the replicas answer what the front let through: they never see a key
    keyless = replace(options, api_key=None, admin_key=None, keys_file=None)
    return ingress.bind(model.bind(models, keyless, threads), models, options)


MODEL_ARGS = {"model": "base_model", "adapters": "adapters", "engine": "engine", "collections": "collections"}
LAYOUT_ARGS = {f.name for f in fields(RayOptions)} - {"address"}
OPTION_ARGS = {f.name for f in fields(ServeOptions)} - {"api_key", "admin_key", "limits", "host", "port"}


def from_args(args: dict) -> tuple[ServedModels, ServeOptions, RayOptions]:
    """A Serve config file's `args` as loraqa's options: `model`, `adapters` ({name: folder}),
    `engine`, `collections` ({adapter: collection}); `adapter_root`, `max_loaded`, `pin`, `store`,
    `keys_file`, `expose_collections`, `allowed_host`, `cors_origins`, `window_ms`, `max_batch`,
    `max_batch_tokens`; `limits` ({max_context_chars: ..., as ServerLimits}); the layout's
    `replicas`, `min_replicas`, `max_replicas`, `target_ongoing_requests`, `replica_cpus`,
    `ingress_cpus`. Keys come from LORAQA_API_KEY and LORAQA_ADMIN_KEY in the runtime
    environment, never from the file."""
    from loraqa.serving.limits import ServerLimits
    from loraqa.serving.scopes import checked_key

    unknown = sorted(set(args) - set(MODEL_ARGS) - LAYOUT_ARGS - OPTION_ARGS - {"limits"})
    if unknown:
        raise UsageError(f"unknown args in the Serve config: {', '.join(unknown)}")
    try:
        limits = ServerLimits(**(args.get("limits") or {}))
    except TypeError as exc:
        raise UsageError(f"the Serve config's limits: {exc}") from None
    models = ServedModels(**{MODEL_ARGS[k]: v for k, v in args.items() if k in MODEL_ARGS})
    options = ServeOptions(
        api_key=checked_key(os.environ.get("LORAQA_API_KEY"), "API key"),
        admin_key=checked_key(os.environ.get("LORAQA_ADMIN_KEY"), "admin key"),
        host="0.0.0.0",  # Ray's proxy decides the address; Host names are --allowed-host's
        limits=limits,
        **{k: v for k, v in args.items() if k in OPTION_ARGS},
    )
    return models, options, RayOptions(**{k: v for k, v in args.items() if k in LAYOUT_ARGS}).checked()


def app_builder(args: dict) -> Any:
    """The application a Serve config file names (`import_path: loraqa.serving.ray_app:app_builder`,
    see deploy/serve.yaml), from its `args` (from_args)."""
    return build(*from_args(args))


def model_handle(address: str):
    """The model deployment of the loraqa app running on the Ray cluster at `address` (for a
    front end outside it: `loraqa mcp --ray-address`)."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    from ray.serve.exceptions import RayServeException

    try:
        return ray.serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=APP_NAME)
    except RayServeException as exc:  # no Serve, or no loraqa app on it
        raise UsageError(f"no loraqa app is running on the Ray cluster at {address} ({exc})") from None


def run_on_ray(models: ServedModels, options: ServeOptions, ray_options: RayOptions) -> None:
    """Deploy the app on Ray (a local instance unless an address is given) and serve until
    stopped (Ctrl-C takes the app down)."""
    ray = _ray()
    serve = ray.serve
    from loraqa.reporting import say

    started = time.monotonic()
    application = build(models, options, ray_options)
    if ray_options.address:
        ray.init(address=ray_options.address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False)
    stopped = threading.Event()

    def stop(signum, frame) -> None:
        stopped.set()

    try:
        serve.start(http_options={"host": options.host, "port": options.port})
        serve.run(application, name=APP_NAME, route_prefix="/")
        # Ray's driver takes SIGINT over and ignores it for good: Ctrl-C, `docker stop` and
        # Kubernetes' SIGTERM must still take the app down
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        say(f"server ready on Ray {time.monotonic() - started:.1f} s after start")
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(APP_NAME)
        ray.shutdown()
