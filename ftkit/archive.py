"""Export archives on disk: written atomically, checked member by member before anything is extracted.

An archive is a gzipped tar of one flat folder (the exported model folder: weights, tokenizer, model card, job
record, metrics, ``ftkit_export.json``). Only regular files and folders with relative paths are accepted:
absolute paths, ``..`` parts, links and device files are refused before extraction starts, and extraction
itself runs through the standard library's ``filter="data"`` as a second line of defence.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from ._io import atomic_dir, atomic_path, sha256_file

EXPORT_MANIFEST = "ftkit_export.json"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


class UnsafeArchiveError(ValueError):
    """An archive with members that could write outside the extraction folder (or are not plain files)."""


def is_archive_path(path) -> bool:
    return str(path).endswith(ARCHIVE_SUFFIXES)




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


def member_problems(members: list[tarfile.TarInfo]) -> list[str]:
    """Every member that is not a plain file or folder at a relative path inside the archive."""
    problems = []
    for m in members:
        name = m.name
        posix, win = PurePosixPath(name), PureWindowsPath(name)
        if posix.is_absolute() or win.is_absolute() or win.drive or name.startswith(("/", "\\")):
            problems.append(f"{name!r}: absolute path")
        elif ".." in posix.parts or ".." in win.parts:
            problems.append(f"{name!r}: '..' leads outside the extraction folder")
        if m.issym() or m.islnk():
            problems.append(f"{name!r}: {'symbolic' if m.issym() else 'hard'} link to {m.linkname!r}")
        elif not (m.isfile() or m.isdir()):
            problems.append(f"{name!r}: not a regular file or folder (device, FIFO or other special file)")
    return problems


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike | None = None) -> Path:
    """Extract a checked export archive; returns the folder.

    ``dest`` defaults to ``<ftkit cache>/exports/<first 16 hex digits of the archive's sha256>``, reused when
    the same archive was extracted before. Raises :class:`UnsafeArchiveError` listing every bad member, before
    anything is written.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"no export archive at {archive}")
    if dest is None:
        from .paths import cache_dir

        dest = cache_dir() / "exports" / sha256_file(archive)[:16]
        if (dest / EXPORT_MANIFEST).is_file():
            return dest
    dest = Path(dest)
    if not hasattr(tarfile, "data_filter"):
        raise RuntimeError("this Python's tarfile has no extraction filters; use Python 3.10.12+ or 3.11.4+")
    try:
        tar = tarfile.open(archive, "r:*")
    except tarfile.TarError as e:
        raise UnsafeArchiveError(f"{archive} is not a readable tar archive ({e})") from None
    with tar:
        members = tar.getmembers()
        problems = member_problems(members)
        if problems:
            raise UnsafeArchiveError(
                f"refusing to extract {archive}: {len(problems)} unsafe member(s), nothing was extracted:\n  "
                + "\n  ".join(problems)
            )
        with atomic_dir(dest) as tmp:
            tar.extractall(tmp, members=members, filter="data")
    return dest


def read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / EXPORT_MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{folder} holds no {EXPORT_MANIFEST}: it is not an ftkit export") from None


def load_exported(archive: str | os.PathLike, device: str = "cpu", dest: str | os.PathLike | None = None,
                  dtype: str = "fp32", base_model: str | None = None):
    """Load an exported job (archive or already extracted folder); returns ``(model, tokenizer)`` in eval
    mode.

    Adapter archives load the base model named in their job.json (``base_model`` overrides it, e.g. a local
    copy) and the adapter through peft; merged and full-model archives load with transformers alone. ``dest``
    is where to extract (default: a cache folder keyed by the archive's sha256). ``dtype`` is "fp32", "bf16"
    or "fp16".
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(archive)
    folder = path if path.is_dir() else extract_archive(path, dest)
    manifest = read_manifest(folder)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if manifest["kind"] == "adapter":
        from peft import PeftModel

        from .modeling import load_model

        ref = base_model or manifest["base_model"]["ref"]
        base, _, _ = load_model(ref, device="cpu", dtype=dtype)
        model = PeftModel.from_pretrained(base, folder)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype)
    model.to(device)
    model.eval()
    return model, tokenizer
