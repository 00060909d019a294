"""Keys with scopes: who may ask which adapters and read which collections.

A keys file (`serve --keys FILE`, `mcp --keys FILE`) is YAML, a list of entries:

    - name: clinic-agent          # shown in logs and in /metrics (loraqa_requests_total{key=...})
      sha256: 9f86d0...           # of the key itself; the key is never stored
      adapters: [clinical*, base] # globs of the adapter names it may ask ('*': all; `base` is a name like any other)
      collections: [wards]        # globs of the collections it may read, among those the server exposes
      admin: false                # may load and unload adapters, and sees server-side paths

`loraqa keys new NAME ...` makes a key and prints its entry. `LORAQA_API_KEY` and
`LORAQA_ADMIN_KEY` (or --api-key / --admin-key) stay the one-user shortcut: a user key with every
adapter and every exposed collection, and an admin key; they may stand beside a keys file.

A key is matched by the SHA-256 of what the client sends, compared in constant time with every
entry. With no key configured at all the server is open (everyone has every scope, nobody is
admin), as before keys existed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import yaml

from loraqa.errors import UsageError

KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
API_KEY_NAME, ADMIN_KEY_NAME = "LORAQA_API_KEY", "LORAQA_ADMIN_KEY"  # the shortcuts' names in logs and metrics
ANONYMOUS = "-"  # requests without a (valid) key, in the metrics
FIELDS = {"name", "sha256", "adapters", "collections", "admin"}


@dataclass(frozen=True)
class Scope:
    """What one key may do."""

    name: str
    adapters: tuple[str, ...] = ("*",)
    collections: tuple[str, ...] = ("*",)
    admin: bool = False

    def may_use(self, adapter: str) -> bool:
        return any(fnmatchcase(adapter, g) for g in self.adapters)

    def may_read(self, collection: str) -> bool:
        return any(fnmatchcase(collection, g) for g in self.collections)


OPEN = Scope(ANONYMOUS)  # a server without keys: every adapter and exposed collection, no admin


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def checked_key(value: str | None, what: str) -> str | None:
    """A key as given, refused when empty or only whitespace (`--api-key "$KEY"` with KEY unset
    would otherwise start a server that lets everyone in)."""
    if value is None:
        return None
    if not value.strip():
        raise UsageError(f"the {what} is empty (an unset variable?); give a real key, or leave it out")
    return value


class KeyRing:
    """Every key a server accepts, each with its scope."""

    def __init__(self, entries: list[tuple[str, Scope]] | None = None):
        self.entries = list(entries or [])  # (sha256 hex, scope)
        names = [scope.name for _, scope in self.entries]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise UsageError(f"two keys are named '{dup}'; key names must differ")

    @classmethod
    def build(cls, api_key: str | None = None, admin_key: str | None = None, keys_file: str | Path | None = None):
        entries = read_keys_file(keys_file) if keys_file else []
        api_key, admin_key = checked_key(api_key, "API key"), checked_key(admin_key, "admin key")
        if api_key is not None:
            entries.append((digest(api_key), Scope(API_KEY_NAME)))
        if admin_key is not None:
            entries.append((digest(admin_key), Scope(ADMIN_KEY_NAME, admin=True)))
        return cls(entries)

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    @property
    def has_admin(self) -> bool:
        return any(scope.admin for _, scope in self.entries)

    @property
    def names(self) -> list[str]:
        return [scope.name for _, scope in self.entries]

    def identify(self, authorization: str) -> Scope | None:
        """The scope of a bearer token (None: no such key). Without keys, everyone is OPEN."""
        if not self.enabled:
            return OPEN
        token = authorization[7:] if authorization[:7].lower() == "bearer " else ""
        if not token:
            return None
        given = digest(token)
        found = None
        for stored, scope in self.entries:  # every entry compared: the time taken says nothing
            if hmac.compare_digest(given, stored):
                found = scope
        return found


def _globs(entry: dict, key: str, where: str) -> tuple[str, ...]:
    value = entry.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(g, str) and g.strip() for g in value):
        raise UsageError(f"{where}: '{key}' must be a list of names or globs, e.g. [clinical, 'policy-*']")
    return tuple(g.strip() for g in value)


def read_keys_file(path: str | Path) -> list[tuple[str, Scope]]:
    """The entries of a keys file, each checked; a problem is one line naming the entry."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"the keys file {path} cannot be read ({exc.strerror or exc})") from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise UsageError(f"the keys file {path} is not YAML ({str(exc).splitlines()[0][:120]})") from None
    if data is None:
        data = []
    if not isinstance(data, list):
        raise UsageError(f"the keys file {path} must be a list of entries (- name: ..., sha256: ...)")
    entries: list[tuple[str, Scope]] = []
    for n, entry in enumerate(data, 1):
        where = f"{path} entry {n}"
        if not isinstance(entry, dict):
            raise UsageError(f"{where} is not a mapping with name, sha256, adapters, collections, admin")
        unknown = sorted(set(map(str, entry)) - FIELDS)
        if unknown:
            raise UsageError(f"{where}: unknown field '{unknown[0]}' (fields: {', '.join(sorted(FIELDS))})")
        name = entry.get("name")
        if not isinstance(name, str) or not KEY_NAME.fullmatch(name):
            raise UsageError(f"{where}: 'name' must be 1-64 letters, digits, '.', '_' or '-'")
        hexdigest = entry.get("sha256")
        if not isinstance(hexdigest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", hexdigest):
            raise UsageError(
                f"{where} ({name}): 'sha256' must be the 64 hex digits of the key's SHA-256 "
                "(`loraqa keys new` writes it)"
            )
        admin = entry.get("admin", False)
        if not isinstance(admin, bool):
            raise UsageError(f"{where} ({name}): 'admin' must be true or false")
        if name in [scope.name for _, scope in entries]:
            raise UsageError(f"{where}: two keys are named '{name}'; key names must differ")
        entries.append(
            (
                hexdigest.lower(),
                Scope(name, _globs(entry, "adapters", where), _globs(entry, "collections", where), admin),
            )
        )
    return entries


def new_key(name: str, adapters: list[str], collections: list[str], admin: bool = False) -> tuple[str, str]:
    """A fresh key and its keys-file entry (YAML)."""
    if not KEY_NAME.fullmatch(name):
        raise UsageError(f"key name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    key = "lqa_" + secrets.token_urlsafe(32)
    entry = [
        {
            "name": name,
            "sha256": digest(key),
            "adapters": list(adapters),
            "collections": list(collections),
            "admin": admin,
        }
    ]
    return key, yaml.safe_dump(entry, sort_keys=False, default_flow_style=None)
