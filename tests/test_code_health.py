"""The package's lint: what a change that breaks it would let through is an unused import that
hides a missing one, a bare `except` that swallows a user's Ctrl-C, a mutable default shared
between calls. The rules and each exception to them are in pyproject.toml ([tool.ruff])."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_ruff_finds_nothing_in_the_package():
    """The package, its tests, the benchmarks and the tools: a test's unused variable or an
    unescaped pattern hides what it checks as easily as the package's own code would."""
    res = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", "src", "tests", "benchmarks", "tools"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_package_is_formatted():
    """Code laid out by one formatter: a change's diff shows what it changes, not whose editor it came from."""
    res = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "src", "tests", "benchmarks", "tools"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_finds_nothing_in_the_package():
    """Types checked: a None where a value is needed, an option object built with a field it does
    not have, an engine missing a method of the protocol, all fail here before a user meets them.
    The settings are in pyproject.toml ([tool.mypy])."""
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--no-error-summary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_noqa_in_the_package_says_why():
    """A `# noqa` or `# type: ignore` without its reason is a check switched off with nobody knowing
    what it protects."""
    bare = []
    for path in (ROOT / "src").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "# noqa" in line and " - " not in line.split("# noqa", 1)[1]:
                bare.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
            if "# type: ignore" in line and "  # " not in line.split("# type: ignore", 1)[1]:
                bare.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bare, "\n".join(bare)


def _layout_table() -> list[list[str]]:
    """The documented code layout (docs/explanation/architecture.md), top to bottom: each row's
    modules and folders."""
    text = (ROOT / "docs" / "explanation" / "architecture.md").read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) < 3 or set(cells[1].strip()) <= {"-"} or "folder / module" in cells[1]:
            continue
        rows.append([n.rstrip("/").removesuffix(".py") for n in re.findall(r"`([\w./]+)`", cells[1])])
    return rows


def test_imports_point_only_up_the_documented_layer_list():
    """The layout table (docs/explanation/architecture.md) says a module may import only what sits above it (or beside it): an import
    running down the list is how cycles start and how a light command ends up importing torch.
    Imports inside functions count too. A new top-level module missing from the table fails here."""
    rows = _layout_table()

    def layer(module: str) -> int | None:
        top = module.split(".")[1] if module.count(".") else None
        if top is None or top in ("__main__", "__version__"):
            return None  # the package root: `import loraqa` and its version, above every layer
        return next((i for i, names in enumerate(rows) if top in names), -1)

    wrong = []
    for path in sorted((ROOT / "src" / "loraqa").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts).removesuffix(".__init__")
        mine = layer(module)
        if mine is None:
            continue
        if mine == -1:
            wrong.append(f"{module}: not in the code layout (docs/explanation/architecture.md)")
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "loraqa":
                targets = [f"loraqa.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("loraqa."):
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("loraqa.")]
            else:
                continue
            for target in targets:
                theirs = layer(target)
                if theirs is not None and theirs > mine:
                    wrong.append(f"{module}:{node.lineno} imports {target}, which sits below it")
    assert len(rows) > 10 and not wrong, "\n".join(wrong)


def test_no_library_function_takes_more_than_eight_parameters():
    """Long flat parameter lists are where two arguments of one type get swapped without anything
    noticing; options travel as typed objects instead (ServeOptions, EvalOptions, WindowShape...).
    cli/ is exempt: a typer command's options are its parameters."""
    long = []
    for path in sorted((ROOT / "src" / "loraqa").rglob("*.py")):
        if "cli" in path.relative_to(ROOT / "src" / "loraqa").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
                count = len(names) + bool(a.vararg) + bool(a.kwarg) - (names[:1] in (["self"], ["cls"]))
                if count > 8:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} takes {count}")
    assert not long, "\n".join(long)


def test_only_the_command_line_prints():
    """Library code says what it does on the loraqa.progress logger and takes progress callbacks:
    a print or a Rich console there would write into a Python caller's output, or into an MCP
    server's stdout, which is its protocol channel."""
    found = []
    for path in sorted((ROOT / "src" / "loraqa").rglob("*.py")):
        if "cli" in path.relative_to(ROOT / "src" / "loraqa").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} print()")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rich"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}")
    assert not found, "\n".join(found)
