"""Looking for a planted secret everywhere ftkit could have put it: what a command printed, and every file under some
folders, members of .tar.gz archives included.

Shared by the tests of each way a token reaches ftkit (command-line options, the environment, Hub errors, exports);
the HTTP server's tests add their requests, responses and server log as more ``outputs`` and folders as ``roots``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

PLANTED_TOKEN = "hf_PLANTEDtokenNeverToBeSeen0123456789"


def places_holding(secret: str, outputs: dict[str, str], roots: list[Path]) -> list[str]:
    """Where ``secret`` appears: names of ``outputs`` (label -> text) and files under ``roots`` (``archive!member``
    for a member of an archive)."""
    found = [label for label, text in outputs.items() if secret in text]
    needle = secret.encode()
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file() and not path.is_symlink():
                found += [f"{path}{member}" for member in _hits(path, needle)]
    return found


def _hits(path: Path, needle: bytes) -> list[str]:
    hits = [""] if needle in path.read_bytes() else []
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(path) as tar:
                for m in tar.getmembers():
                    if m.isfile() and needle in tar.extractfile(m).read():
                        hits.append(f"!{m.name}")
        except (tarfile.TarError, EOFError, OSError):
            pass  # a deliberately damaged archive: its raw bytes were searched above
    return hits


def ftkit(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    """Run the real command in a fresh process; returns the CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", "ftkit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
