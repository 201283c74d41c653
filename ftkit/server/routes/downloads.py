"""The signed download link of a job's export archive: no bearer token, the link's HMAC signature and expiry
stand in for it (``curl -L`` follows the redirect of ``GET jobs/{id}/download`` here)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from ftkit.server.auth import check_signature
from ftkit.server.errors import not_found
from ftkit.server.routes.common import query_int

router = APIRouter()


@router.get("/api/v1/downloads/{filename}")
def archive_file(request: Request, filename: str) -> FileResponse:
    ctx = request.app.state.ctx
    job_id = filename.removesuffix(".tar.gz")
    expires = query_int(request, "expires", 0, 0, 2**62)
    check_signature(ctx.token, job_id, expires, request.query_params.get("signature", ""))
    entry = ctx.db.get("archives", job_id, key="job_id")
    if entry is None:
        raise not_found("archive for job", job_id)
    return FileResponse(entry["path"], media_type="application/gzip", filename=filename)
