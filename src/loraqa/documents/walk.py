"""Finding the files that paths, folders and globs name, without being led astray by the folder.

Folders are walked by hand rather than with glob or Path.rglob, which on Python 3.10-3.12
follow links to directories (a link to `.` makes `**` walk forever, two make it exponential):
here no directory link is followed, each real directory is visited once, hidden entries are left
out, and a link to a file outside the folder being walked is skipped unless follow_links. What is
skipped (links, unreadable folders, what is not a regular file, globs that match nothing) is
named with its reason. Names are printable (documents/names.py).
"""

from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from loraqa.documents.formats import SUFFIXES
from loraqa.documents.names import shown


@dataclass
class Found:
    path: Path  # to open
    name: str  # as printed and stored (unprintable characters escaped)


@dataclass
class Walk:
    files: list[Found] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, the line that says why)

    matched: int = 0  # files the arguments named, each time (before a file named twice is kept once)

    def skip(self, path, why: str) -> None:
        line = (shown(path), f"{shown(path)}: skipped, {why}")
        if line not in self.skipped:  # a thing two arguments reach is said once
            self.skipped.append(line)


def find_files(paths: list[str], follow_links: bool = False) -> Walk:
    """Every file the arguments name: files as given, folders walked (supported suffixes only),
    globs matched (`**` for any depth); each file once, in a stable order."""
    walk, seen = Walk(), set()

    def add(path: Path, identity) -> None:
        walk.matched += 1
        if identity not in seen:
            seen.add(identity)
            walk.files.append(Found(path, shown(path)))

    for given in paths:
        if glob.has_magic(given):
            _glob(given, walk, add, follow_links)
            continue
        path = Path(given)
        try:
            st = path.stat()
        except FileNotFoundError:
            walk.skip(path, "no such file or folder")
            continue
        except OSError:
            add(path, ("unreadable", str(path)))  # reported when it is read, with the reason
            continue
        if stat.S_ISDIR(st.st_mode):
            before = len(walk.files)
            _walk(path, walk, add, follow_links, path.resolve(), lambda rel: True)
            walk.files[before:] = sorted(walk.files[before:], key=lambda f: f.path)
        else:
            add(path, (st.st_dev, st.st_ino))
    return walk


def _glob(pattern: str, walk: Walk, add, follow_links: bool) -> None:
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    base = Path(*parts[:fixed]) if fixed else Path(".")
    wanted = parts[fixed:]
    before = walk.matched
    if base.is_dir():
        root = base.resolve()
        _walk(
            base,
            walk,
            add,
            follow_links,
            root,
            lambda rel: _could_match(wanted, rel),
            lambda rel: _matches(wanted, rel),
            show_base=fixed > 0,
        )
    if walk.matched == before:
        walk.skip(pattern, "no file matches")


def _walk(
    top: Path, walk: Walk, add, follow_links: bool, root: Path, descend, take=None, show_base: bool = True
) -> None:
    """Depth-first over real directories only. descend(rel) says whether a folder may hold
    matches; take(rel): whether an entry matches (None: every supported file, as a folder
    argument); a folder that matches is taken whole."""
    visited: set[tuple[int, int]] = set()
    stack: list[tuple[Path, tuple[str, ...]]] = [(top, ())]
    while stack:
        folder, rel = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in visited:
                continue
            visited.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            walk.skip(folder, f"folder not readable ({exc.strerror or type(exc).__name__})")
            continue
        subfolders: list[tuple[Path, tuple[str, ...]]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path, sub = Path(entry.path) if show_base else Path(*rel, entry.name), (*rel, entry.name)
            try:
                is_link = entry.is_symlink()
                st = entry.stat(follow_symlinks=True)
            except OSError:
                if take is None or take(sub):
                    walk.skip(path, "a broken link" if entry.is_symlink() else "cannot be read")
                continue
            whole = take is None or take(sub)
            if stat.S_ISDIR(st.st_mode):
                if is_link:
                    if whole or descend(sub):
                        walk.skip(path, "a link to a folder: not followed")
                elif whole and take is not None:
                    _walk(path, walk, add, follow_links, root, lambda r: True)  # a folder the glob names
                elif whole or descend(sub):
                    subfolders.append((path, sub))
                continue
            if not whole or (take is None and Path(entry.name).suffix.lower() not in SUFFIXES):
                continue
            if not stat.S_ISREG(st.st_mode):
                walk.skip(path, "not a regular file")
            elif is_link and not follow_links and not _inside(path, root):
                walk.skip(path, "a link to a file outside the folder (--follow-links reads it)")
            else:
                add(path, (st.st_dev, st.st_ino))
        stack += reversed(subfolders)


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve(strict=True).is_relative_to(root)
    except (OSError, RuntimeError):
        return False


def _states(pattern: tuple[str, ...], rel: tuple[str, ...]) -> set[int]:
    """The pattern positions a path of these segments can have reached (`**` spans any number
    of segments, none hidden; other segments match one name each, as fnmatch does)."""

    def close(states: set[int]) -> set[int]:
        out = set(states)
        for i in sorted(states):
            j = i
            while j < len(pattern) and pattern[j] == "**":
                j += 1
                out.add(j)
        return out

    states = close({0})
    for name in rel:
        nxt = set()
        for i in states:
            if i == len(pattern):
                continue
            if pattern[i] == "**":
                if not name.startswith("."):
                    nxt.add(i)
            elif fnmatchcase(name, pattern[i]) and (not name.startswith(".") or pattern[i].startswith(".")):
                nxt.add(i + 1)
        states = close(nxt)
        if not states:
            break
    return states


def _matches(pattern: tuple[str, ...], rel: tuple[str, ...]) -> bool:
    return len(pattern) in _states(pattern, rel)


def _could_match(pattern: tuple[str, ...], rel: tuple[str, ...]) -> bool:
    return any(i < len(pattern) for i in _states(pattern, rel))
