"""The one place optional packages are imported.

loraqa's core (training, evaluation, answering) needs only its declared dependencies. Some
features need more: the HTTP server (fastapi, uvicorn), 8/4-bit loading (bitsandbytes) and the
trackers (tensorboard, mlflow). Each feature asks for its package here when it starts, so a
missing package is one clear line naming the pip extra that installs it, not a traceback from
deep inside an import.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from loraqa.errors import MissingDependency

# package -> the loraqa extra that installs it
EXTRAS = {
    "fastapi": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
    "mcp": "serve",
    "ctranslate2": "ctranslate2",
    "bitsandbytes": "gpu",
    "tensorboard": "tracking",
    "mlflow": "tracking",
}


def is_installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def require(package: str, purpose: str) -> ModuleType:
    """Import an optional package, or say in one line how to install it."""
    if not is_installed(package):
        extra = EXTRAS.get(package)
        how = f"pip install 'loraqa[{extra}]'" if extra else f"pip install {package}"
        raise MissingDependency(f"{purpose} needs the '{package}' package; install it with `{how}`")
    return importlib.import_module(package)
