"""The one place optional packages are checked for and imported.

loraqa's core (training, evaluation, answering) needs only its declared dependencies. Some
features need more: the HTTP server (fastapi, uvicorn, prometheus-client), the MCP server (mcp),
the CTranslate2 engine (ctranslate2), 8/4-bit loading (bitsandbytes) and the trackers
(tensorboard, mlflow). Each feature asks for its packages here when it starts, so a missing
package is one clear line naming the pip extra that installs it, not a traceback from deep
inside an import; and a feature never needs another's packages (`serve` runs without `mcp`).
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
    "mcp": "mcp",
    "ctranslate2": "ctranslate2",
    "onnxruntime": "embeddings",
    "onnx": "embeddings",
    "bitsandbytes": "gpu",
    "tensorboard": "tracking",
    "mlflow": "tracking",
    "pypdf": "documents",
    "docx": "documents",
    "trafilatura": "documents",
    "psycopg": "postgres",
    "openai": "synth",
    "ray": "ray",
    "sentence_transformers": "similarity",
    "wandb": None,  # a core dependency, but one a user may have removed
}
# feature -> the packages it needs
FEATURES = {
    "serve": ("fastapi", "uvicorn", "prometheus_client"),
    "mcp": ("mcp", "uvicorn"),
    "ray": ("ray", "fastapi", "uvicorn", "prometheus_client"),
}


def is_installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def check(package: str, purpose: str, otherwise: str = "") -> None:
    """Say in one line how to install `package` when it is missing, without importing it."""
    if not is_installed(package):
        extra = EXTRAS.get(package)
        how = f"pip install 'loraqa[{extra}]'" if extra else f"pip install {package}"
        raise MissingDependency(
            f"{purpose} needs the '{package}' package; install it with `{how}`" + (f" {otherwise}" if otherwise else "")
        )


def require(package: str, purpose: str) -> ModuleType:
    """Import an optional package, or say in one line how to install it: also when the package is
    there but something it imports is not (trafilatura asks for lxml_html_clean through an lxml
    extra that older pips miss)."""
    check(package, purpose)
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        extra = EXTRAS.get(package)
        missing = exc.name or str(exc).splitlines()[0][:120]
        how = f"pip install 'loraqa[{extra}]'" if extra else f"pip install --force-reinstall {package}"
        raise MissingDependency(
            f"{purpose} needs the '{package}' package, which cannot be imported: it needs "
            f"'{missing}'; install it with `{how}` (a current pip: `pip install -U pip`)"
        ) from None


def require_extra(feature: str, purpose: str) -> dict[str, ModuleType]:
    """Every package a feature needs, imported (each missing one named with its pip extra)."""
    return {package: require(package, purpose) for package in FEATURES[feature]}
