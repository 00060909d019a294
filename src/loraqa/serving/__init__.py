"""Serving: the HTTP app (loraqa's routes, OpenAI-compatible routes, Prometheus metrics, the demo
page in static/) and the MCP tool server, all over one Answerer; request batching lives in inference/.

The server's packages are an optional extra (`pip install 'loraqa[serve]'`): checking for them here,
the one place, turns a missing install into one clear error line when a server is started.
"""

from loraqa.errors import MissingDependency
from loraqa.optional import is_installed

for _package in ("fastapi", "uvicorn", "prometheus_client", "mcp"):
    if not is_installed(_package):
        raise MissingDependency(f"loraqa's servers need the '{_package}' package; "
                                "install them with `pip install 'loraqa[serve]'`")
