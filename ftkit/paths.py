"""Where ftkit keeps things on disk: one user cache directory, overridable with FTKIT_CACHE."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The ftkit cache (converted bundled model, downloaded datasets). ``FTKIT_CACHE`` overrides it."""
    env = os.environ.get("FTKIT_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("ftkit"))


def repo_root() -> Path:
    """The source checkout ftkit runs from (notebooks, data/ and ../shared are found relative to it)."""
    return Path(__file__).resolve().parent.parent


def shared_dir() -> Path | None:
    """The ``shared/`` folder beside the checkout, when present (holds a local PubMedQA copy in CI)."""
    env = os.environ.get("FTKIT_SHARED")
    candidates = [Path(env)] if env else [repo_root().parent / "shared", repo_root() / "shared"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def display_path(path: str | os.PathLike, start: str | os.PathLike | None = None) -> str:
    """A path as ftkit prints it, free of the machine's layout where that is unambiguous: relative to ``start``
    (default: the current folder) when it is inside start's parent, else under ``~`` when in the home folder, else
    absolute. Notebook outputs stay the same on every machine: ``../out/cookbook/runs/job``, ``~/.cache/ftkit``."""
    p = Path(path).expanduser().absolute()
    rel = os.path.relpath(p, start if start is not None else Path.cwd())
    if Path(rel).parts.count("..") <= 1:
        return rel
    home = Path.home()
    if p.is_relative_to(home):
        return str(Path("~") / p.relative_to(home))
    return str(p)
