"""``files``: upload a CSV (multipart field ``file``; checked as ``ftkit validate`` reads files, every structural
problem back at once with its line and row), list, get, delete, and stream its bytes (the file's ``download_url``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ftkit.data.csvread import read_csv
from ftkit.data.report import Issue
from ftkit.server.context import org_base
from ftkit.server.db import new_id, utc_now
from ftkit.server.errors import ApiError, conflict
from ftkit.server.views import file_object

router = APIRouter()


def _issue_text(i: Issue) -> str:
    where = f" {i.where()}" if i.where() else ""
    return f"{i.file}{where}: {i.message}" + (f" (allowed: {i.allowed})" if i.allowed else "")


def _check(tmp: Path, name: str) -> tuple[list[str], int]:
    """(columns, data rows) of an uploaded CSV; a 400 lists every error with its line and row."""
    issues: list[Issue] = []
    table = read_csv(tmp, name, issues)
    errors = sorted((i for i in issues if i.severity == "error"), key=lambda i: (i.line or 0, i.row or 0))
    if errors or table is None:
        n = len(errors)
        lines = "\n".join(f"  - {_issue_text(i)}" for i in errors)
        raise ApiError(
            400,
            "invalid_file",
            f"{name}: {n} problem{'s' if n != 1 else ''} in the CSV file:\n{lines}",
            [{k: v for k, v in vars(i).items() if v is not None} for i in errors],
        )
    return table.header, table.n_rows


@router.post("/files")
async def upload(request: Request) -> dict:
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "invalid_request", "send the CSV as the multipart form field 'file' (curl -F file=@x.csv)")
    ctx = request.app.state.ctx
    file_id, name = new_id(), Path(upload.filename or "upload.csv").name
    folder = ctx.state / "files"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{file_id}{Path(name).suffix.lower()}"  # the name's suffix: a .json upload is named as one
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            while chunk := await upload.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        columns, rows = await run_in_threadpool(_check, tmp, name)
        path = folder / f"{file_id}.csv"
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    row = {
        "id": file_id,
        "name": name,
        "bytes": size,
        "created_at": utc_now(),
        "columns": columns,
        "lines": rows,
        "path": str(path),
        "sha256": digest.hexdigest(),
    }
    ctx.db.insert("files", row)
    return file_object(row, org_base(request))


@router.get("/files")
def list_files(request: Request) -> dict:
    rows = request.app.state.ctx.db.select("SELECT * FROM files ORDER BY rowid DESC")
    return {"data": [file_object(r, org_base(request)) for r in rows]}


@router.get("/files/{file_id}")
def get_file(request: Request, file_id: str) -> dict:
    return file_object(request.app.state.ctx.row("files", file_id, "file"), org_base(request))


@router.get("/files/{file_id}/content")
def file_content(request: Request, file_id: str) -> FileResponse:
    row = request.app.state.ctx.row("files", file_id, "file")
    return FileResponse(row["path"], media_type="text/csv", filename=row["name"])


@router.delete("/files/{file_id}")
def delete_file(request: Request, file_id: str) -> dict:
    ctx = request.app.state.ctx
    row = ctx.row("files", file_id, "file")
    used = ctx.db.select(
        "SELECT id FROM datasets WHERE training_file_id = ? OR validation_file_id = ?", (file_id, file_id)
    )
    if used:
        raise conflict("file_in_use", f"file {file_id!r} is used by dataset(s) {', '.join(r['id'] for r in used)}")
    ctx.db.delete("files", file_id)
    Path(row["path"]).unlink(missing_ok=True)
    return {"id": file_id, "object": "file", "deleted": True}
