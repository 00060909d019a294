"""Names: what a user may call an adapter (or a collection), and the names reserved for the base.

Kept free of imports beyond the standard library so that every layer can use them.
"""

from __future__ import annotations

import re

# A name in a URL, a file name and a Prometheus label alike: letters, digits, _ . -, at most 64.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

BASE = "base"  # the adapter name that means "the base model, no adapter"
# PEFT's name for "no adapter" inside a mixed-adapter batch (an engine's own marker, never a user's name)
ENGINE_BASE = "__base__"
