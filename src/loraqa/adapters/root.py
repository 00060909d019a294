"""An adapter found by its path inside a root folder (the server's `--adapter-root`): the path a
client gives may be relative or absolute, may hold `..` or links, and every one of the adapter's
files must still lie inside the root, or the adapter is not there."""

from __future__ import annotations

from pathlib import Path

from loraqa.adapters.folder import AdapterRef, adapter_files, resolve_adapter
from loraqa.errors import AdapterNotFound, NotAnAdapter


def find_in_root(root: Path, given: str) -> AdapterRef:
    """The adapter at `given` inside `root`, every file of it inside `root` too; else one message."""
    not_found = AdapterNotFound(f"no adapter at '{given}' in the server's adapter root")
    root = root.resolve()
    try:
        folder = (root / given).resolve(strict=True)  # an absolute `given` replaces root here
        if not folder.is_relative_to(root):
            raise not_found
        ref = resolve_adapter(folder)
        if any(not f.resolve(strict=True).is_relative_to(root) for f in adapter_files(ref)):
            raise not_found
    except (OSError, RuntimeError, ValueError, NotAnAdapter):  # missing, a link loop, a NUL in the path, no adapter
        raise not_found from None
    return ref
