"""The base of every error ftkit raises for input it cannot use or work it cannot do.

Each message names the file, field or row, the value found and what is allowed, so the command line prints it as it
is (exit 1; 2 for a :class:`UsageError`) and never a traceback (unless ``--debug`` or ``FTKIT_DEBUG=1``).
Subclasses keep the built-in base they always had (``ValueError``, ``RuntimeError``, ``FileNotFoundError``), so
code that caught those still works.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# a Hugging Face access token: shown nowhere, whichever option or variable it came in
TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")


class FtkitError(Exception):
    """Something ftkit cannot do as asked; the message says what and what would work."""

    exit_code = 1


class UsageError(FtkitError, ValueError):
    """An argument that cannot be used as given (the command line exits 2, like argparse)."""

    exit_code = 2


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` and anything shaped like a Hugging Face token replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return TOKEN_PATTERN.sub("***", text)
