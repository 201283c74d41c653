"""The API's errors: every failure reaches the client as ``{"code": ..., "message": ...}`` with a fitting status.

400 a request that cannot be read, 401 auth, 403 a bad download signature, 404 an unknown id, 409 a state that does
not allow the request, 422 a body that fails validation (``errors`` lists each problem with its field path), 500 a
bug. Never 502/503/504: clients retry those, and a retried ``POST jobs`` would queue the job twice.
"""

from __future__ import annotations

from ftkit.errors import FtkitError


class ApiError(FtkitError):
    """An answer other than success: HTTP status, a short machine-readable code and a message for people."""

    def __init__(self, status: int, code: str, message: str, errors: list[dict] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def body(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.errors is not None:
            out["errors"] = self.errors
        return out


def not_found(kind: str, id_: str) -> ApiError:
    return ApiError(404, "not_found", f"no {kind} with id {id_!r}")


def conflict(code: str, message: str) -> ApiError:
    return ApiError(409, code, message)
