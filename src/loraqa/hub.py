"""Reaching the Hugging Face Hub, or saying clearly that it cannot be reached.

The hub clients retry for 25-50 s before giving up when there is no network. A quick
connection probe lets loraqa fall back to the local cache at once (HF_HUB_OFFLINE) and, when
the cache does not have the files either, fail with a message that names the local-path option.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def use_cache_only_if_offline() -> bool:
    """Switch the hub clients to cache-only mode when the hub cannot be reached. Returns online."""
    online = hub_reachable()
    if not online:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        try:  # huggingface_hub reads the variable at import; update its constant too
            import huggingface_hub.constants as c

            c.HF_HUB_OFFLINE = True
        except Exception:  # noqa: BLE001 - older/newer hub versions without the constant
            pass
    return online


def looks_like_path(name: str) -> bool:
    return (
        (os.path.sep in name and not _is_hub_id(name))
        or name.startswith((".", "~"))
        or os.path.exists(os.path.expanduser(name))
    )


def _is_hub_id(name: str) -> bool:
    # 'org/name' is a hub id; '/abs/path', 'a/b/c' or 'x.json' are paths.
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith("/") and "." not in parts[0]
