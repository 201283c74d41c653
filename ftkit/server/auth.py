"""The server's bearer token: ``FTKIT_API_TOKEN``, else a random token made on first start and kept in a 0600 file.

Every API request sends ``Authorization: Bearer <token>``; a missing or wrong token is a 401. Download links are
signed with an HMAC of the token, so a link stops working when the token changes.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import time
from pathlib import Path

from ftkit.errors import UsageError
from ftkit.server.errors import ApiError

TOKEN_ENV = "FTKIT_API_TOKEN"
TOKEN_FILE = "token"


def load_token(state: Path) -> tuple[str, Path | None, bool]:
    """(token, the file it is kept in or None when it comes from the environment, whether it was just made)."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env, None, False
    path = state / TOKEN_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8").strip(), path, False
    state.mkdir(parents=True, exist_ok=True)
    token = "ftk_" + secrets.token_urlsafe(32)
    # created 0600 from the start: the token is never readable by other users, not even for a moment
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token, path, True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str) -> None:
    """Beyond loopback the token must be one the operator chose (``FTKIT_API_TOKEN``)."""
    if not is_loopback(host) and not os.environ.get(TOKEN_ENV, "").strip():
        raise UsageError(
            f"--host {host} is reachable from other machines: set {TOKEN_ENV} to the token clients must send "
            "(or bind to 127.0.0.1, the default)"
        )


def check_header(header: str | None, token: str) -> None:
    """Raise a 401 unless ``header`` is ``Bearer <token>`` (compared in constant time)."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "unauthorized", "missing bearer token: send the header 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(
            401, "unauthorized", f"wrong bearer token: use the token ftkit serve printed or {TOKEN_ENV}'s value"
        )


def sign(token: str, job_id: str, expires: int) -> str:
    return hmac.new(token.encode(), f"{job_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def check_signature(token: str, job_id: str, expires: int, signature: str) -> None:
    if not hmac.compare_digest(sign(token, job_id, expires), signature or ""):
        raise ApiError(403, "invalid_signature", "the download link's signature is not valid: ask for a new link")
    if expires < time.time():
        raise ApiError(403, "link_expired", "the download link has expired: ask GET jobs/{id}/download for a new one")
