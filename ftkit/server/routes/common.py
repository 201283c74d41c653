"""What several routes share: reading a JSON body (400 when it is not JSON) and parsing query values."""

from __future__ import annotations

import json

from fastapi import Request

from ftkit.server.errors import ApiError

TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


async def json_body(request: Request):
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {e}") from None


def query_bool(request: Request, name: str, default: bool) -> bool:
    """A boolean query value in any case (clients send ``pagination=False``)."""
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise ApiError(422, "invalid_request", f"query parameter {name}={value!r} must be true or false (any case)")


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        n = None
    if n is None or not low <= n <= high:
        raise ApiError(422, "invalid_request", f"query parameter {name}={value!r} must be a whole number {low}..{high}")
    return n
