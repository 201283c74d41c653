"""Atomic file writes: a reader never sees a half-written file, and a failed write leaves nothing behind.

The temporary files and folders are created private (0600/0700, as :mod:`tempfile` makes them); what is renamed into
place gets the mode any file the user writes gets, 0666/0777 less the umask (0644/0755 under the usual 022), so
results can be shared on a team machine. ftkit writes no secrets to disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _mode(Path(tmp)))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def umask() -> int:
    """The process's umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode(path: Path) -> int:
    """The mode a file or folder would have had if created plainly: 0666 (0777 for folders and executables) less
    the umask."""
    executable = path.is_dir() or path.stat().st_mode & 0o111
    return (0o777 if executable else 0o666) & ~umask()


def honour_umask(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes plain creation would have (see :func:`_mode`)."""
    for p in [folder, *folder.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, _mode(p))


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary directory beside ``path``; it replaces ``path`` only if the block succeeds.

    Used for outputs made of several files (a prepared dataset, an export) so that a failed run leaves
    neither a partial folder nor a damaged earlier result.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        honour_umask(tmp)  # mkdtemp's 0700, and files that libraries wrote through their own temporary files
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
