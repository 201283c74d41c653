"""Writing an export archive: a gzipped tar of one flat folder, written to a temporary file and renamed.

Members carry relative paths and no owner names; :mod:`ftkit.models.exported` reads them back safely.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from ftkit.files import atomic_path


def write_archive(folder: str | os.PathLike, out: str | os.PathLike, compresslevel: int = 6) -> Path:
    """Pack the files under ``folder`` into the gzipped tar ``out`` (relative paths; temp file + rename)."""
    folder, out = Path(folder), Path(out)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        # who packed it and on which machine is nobody's business
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o644 if info.isfile() else 0o755
        return info

    with atomic_path(out) as tmp:
        with tarfile.open(tmp, "w:gz", compresslevel=compresslevel) as tar:
            for p in files:
                tar.add(p, arcname=p.relative_to(folder).as_posix(), recursive=False, filter=clean)
    return out
