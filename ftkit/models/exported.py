"""Reading export archives back: each member is checked before anything is extracted, then the model loads.

An archive (written by :mod:`ftkit.export.archive`) is a gzipped tar of one flat folder (the exported model folder:
weights, tokenizer, model card, job record, metrics, ``ftkit_export.json``). Only regular files and folders with
relative paths are accepted: absolute paths, ``..`` parts, links and device files are refused before extraction
starts, and extraction itself runs through the standard library's ``filter="data"`` as a second line of defence.
"""

from __future__ import annotations

import gzip
import json
import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from ftkit.errors import FtkitError
from ftkit.files import atomic_dir, sha256_file
from ftkit.models.loading import load_model, quiet_loading, torch_dtype
from ftkit.paths import cache_dir

EXPORT_MANIFEST = "ftkit_export.json"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


class ArchiveError(FtkitError, ValueError):
    """A file that is not a readable ftkit export archive (or folder)."""


class UnsafeArchiveError(ArchiveError):
    """An archive with members that could write outside the extraction folder (or are not plain files)."""


def is_archive_path(path) -> bool:
    return str(path).endswith(ARCHIVE_SUFFIXES)


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
        raise ArchiveError(f"no export archive at {archive}")
    if dest is None:
        dest = cache_dir() / "exports" / sha256_file(archive)[:16]
        if (dest / EXPORT_MANIFEST).is_file():
            return dest
    dest = Path(dest)
    if not hasattr(tarfile, "data_filter"):
        raise ArchiveError("this Python's tarfile has no extraction filters; use Python 3.10.12+ or 3.11.4+")
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()  # reads every header: a truncated or corrupt archive fails here
            problems = member_problems(members)
            if problems:
                raise UnsafeArchiveError(
                    f"refusing to extract {archive}: {len(problems)} unsafe member(s), nothing was extracted:\n  "
                    + "\n  ".join(problems)
                )
            if EXPORT_MANIFEST not in {m.name.removeprefix("./") for m in members}:
                raise ArchiveError(
                    f"{archive} is not an ftkit export: it holds no {EXPORT_MANIFEST} (make one with `ftkit export`); "
                    "nothing was extracted"
                )
            with atomic_dir(dest) as tmp:
                tar.extractall(tmp, members=members, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ArchiveError(
            f"{archive} is truncated or corrupt, not a readable .tar.gz ({type(e).__name__}: "
            f"{str(e).splitlines()[0].rstrip(':')}); nothing was extracted: copy or export it again"
        ) from None
    return dest


def read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / EXPORT_MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArchiveError(f"{folder} holds no {EXPORT_MANIFEST}: it is not an ftkit export") from None


def load_exported(
    archive: str | os.PathLike,
    device: str = "cpu",
    dest: str | os.PathLike | None = None,
    dtype: str = "fp32",
    base_model: str | None = None,
):
    """Load an exported job (archive or already extracted folder); returns ``(model, tokenizer)`` in eval
    mode.

    Adapter archives load the base model named in their job.json (``base_model`` overrides it, e.g. a local
    copy) and the adapter through peft; merged and full-model archives load with transformers alone, GGUF archives
    through transformers' GGUF loader (``gguf_file=``). ``dest``
    is where to extract (default: a cache folder keyed by the archive's sha256). ``dtype`` is "fp32", "bf16"
    or "fp16".
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(archive)
    folder = path if path.is_dir() else extract_archive(path, dest)
    manifest = read_manifest(folder)
    gguf = {"gguf_file": manifest["gguf"]["file"]} if manifest["kind"] == "gguf" else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, **gguf)
    if manifest["kind"] == "adapter":
        from peft import PeftModel

        ref = base_model or manifest["base_model"]["ref"]
        base, _, _ = load_model(ref, device="cpu", dtype=dtype)
        with quiet_loading():
            model = PeftModel.from_pretrained(base, folder)
    else:
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(dtype), **gguf)
    model.to(device)
    model.eval()
    return model, tokenizer
