"""`loraqa keys new`: a key for `serve --keys FILE` / `mcp --keys FILE`, printed once."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from loraqa.cli.options import run

keys = typer.Typer(help="Keys with scopes for the servers (serve --keys FILE, mcp --keys FILE).", no_args_is_help=True)


@keys.command("new")
def new(
    name: str = typer.Argument(..., help="The key's name: shown in logs and in /metrics, never secret."),
    adapters: List[str] = typer.Option(
        [], "--adapters", help="An adapter name or glob the key may ask (repeatable; 'clinical*', 'base'; '*' for all)."
    ),
    collections: List[str] = typer.Option(
        [], "--collections", help="A collection name or glob it may read, among those the server exposes (repeatable)."
    ),
    admin: bool = typer.Option(
        False, "--admin", help="It may also load and unload adapters and see server-side paths."
    ),
    append: Optional[str] = typer.Option(
        None, "--append", help="Append the entry to this keys file (made if missing) instead of printing it."
    ),
):
    """Make a key: the key is printed once (only its SHA-256 goes into the keys file), then the
    entry for the keys file. Give the key to its client; loraqa cannot show it again."""

    def action():
        from loraqa.errors import UsageError
        from loraqa.serving.scopes import new_key, read_keys_file

        if not adapters and not collections and not admin:
            raise UsageError("a key that may use nothing is no use: give --adapters, --collections or --admin")
        key, entry = new_key(name, adapters, collections, admin)
        if append:
            path = Path(append)
            if path.exists() and name in [scope.name for _, scope in read_keys_file(path)]:
                raise UsageError(f"{append} already has a key named '{name}'")
            before = path.read_text(encoding="utf-8") if path.exists() else ""
            with path.open("a", encoding="utf-8") as f:
                f.write(("" if not before or before.endswith("\n") else "\n") + entry)
            path.chmod(0o600)
            read_keys_file(path)  # the file still loads as a whole
        return key, entry

    key, entry = run(action)
    typer.echo(key)
    if append:
        typer.echo(f"appended '{name}' to {append}; the key above is shown only now", err=True)
    else:
        typer.echo("# the key above is shown only now; append this entry to your keys file:", err=True)
        typer.echo(entry, nl=False)
