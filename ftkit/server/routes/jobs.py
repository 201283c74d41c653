"""``jobs``: create (or dry-run) a job, list, get, metrics, cancel, resume, download the model, push it to the Hub."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from ftkit.server.auth import sign
from ftkit.server.db import enqueue_time, utc_now
from ftkit.server.errors import ApiError, conflict
from ftkit.server.exports import archive, start_hub_push
from ftkit.server.jobspec import estimated_tokens, job_row, validate
from ftkit.server.routes.common import json_body, query_bool, query_int
from ftkit.server.views import job_object

router = APIRouter()
STATUSES = ("queued", "starting", "running", "completed", "failed", "cancelled")
LINK_SECONDS = 3600


def _view(ctx, row: dict) -> dict:
    position = None
    if row["status"] == "queued":
        ahead = ctx.db.select(
            "SELECT COUNT(*) AS n FROM jobs WHERE status = 'queued' AND queued_at < ?", (row["queued_at"],)
        )
        position = ahead[0]["n"] + 1
    return job_object(row, ctx.job(row["id"]), position)


def _create(ctx, body: dict, dry_run: bool) -> dict:
    spec, ds = validate(ctx.db, body)
    tokens = estimated_tokens(spec)
    usage = {"tokens": tokens, "cost": None}  # nothing is billed locally
    if dry_run:
        return {"dry_run": True, "estimated_usage": usage, "job": None, "id": None}
    row = ctx.db.insert("jobs", job_row(spec, body, ds, tokens, enqueue_time(), utc_now()))
    row = ctx.row("jobs", row["id"], "job")
    # the id at the top level too: older client scripts read it there
    return {"dry_run": False, "estimated_usage": usage, "job": _view(ctx, row), "id": row["id"]}


@router.post("/jobs")
async def create(request: Request) -> dict:
    body = await json_body(request)
    dry_run = query_bool(request, "dry_run", False)
    if isinstance(body, dict) and "dry_run" in body:
        flag = body.pop("dry_run")
        if not isinstance(flag, bool):
            raise ApiError(422, "invalid_job", f"dry_run must be true or false, got {flag!r}")
        dry_run = dry_run or flag
    return await run_in_threadpool(_create, request.app.state.ctx, body, dry_run)


@router.get("/jobs")
def list_jobs(request: Request) -> dict:
    ctx = request.app.state.ctx
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        raise ApiError(422, "invalid_request", f"status={status!r} is not one of {', '.join(STATUSES)}")
    limit = query_int(request, "limit", 100, 1, 10000)
    query_bool(request, "pagination", False)  # accepted for the demo client; one page holds up to `limit` jobs
    where, params = ("WHERE status = ?", (status,)) if status else ("", ())
    rows = ctx.db.select(f"SELECT * FROM jobs {where} ORDER BY rowid DESC LIMIT ?", (*params, limit))
    return {"data": [_view(ctx, r) for r in rows]}


@router.get("/jobs/{job_id}")
def get_job(request: Request, job_id: str) -> dict:
    ctx = request.app.state.ctx
    return _view(ctx, ctx.row("jobs", job_id, "job"))


@router.get("/jobs/{job_id}/metrics")
def metrics(request: Request, job_id: str) -> list[dict]:
    ctx = request.app.state.ctx
    ctx.row("jobs", job_id, "job")
    return ctx.job(job_id).metrics()


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: str) -> dict:
    ctx = request.app.state.ctx
    with ctx.scheduler.lock:  # the queue must not start the job while it is being cancelled
        row = ctx.row("jobs", job_id, "job")
        if row["status"] in ("completed", "failed", "cancelled"):
            raise conflict("job_finished", f"job {job_id!r} is already {row['status']}")
        if row["status"] == "queued":
            ctx.db.update("jobs", job_id, status="cancelled", finished_at=utc_now(), cancel_requested=1)
        else:  # the queue signals the worker, which stops after its current step and keeps a checkpoint
            ctx.db.update("jobs", job_id, cancel_requested=1)
    return _view(ctx, ctx.row("jobs", job_id, "job"))


@router.post("/jobs/{job_id}/resume")
def resume(request: Request, job_id: str) -> dict:
    """ftkit's own: queue a failed or cancelled job again; it continues from its last checkpoint."""
    ctx = request.app.state.ctx
    with ctx.scheduler.lock:
        row = ctx.row("jobs", job_id, "job")
        if row["status"] not in ("failed", "cancelled"):
            raise conflict(
                "job_not_resumable", f"job {job_id!r} is {row['status']}: only failed or cancelled jobs resume"
            )
        ctx.db.update(
            "jobs", job_id, status="queued", queued_at=enqueue_time(), finished_at=None, error=None,
            error_code=None, cancel_requested=0, pid=None,
        )  # fmt: skip
        job = ctx.job(job_id)
        if (job.path / "job.json").is_file():  # the last attempt's end must not be read as this one's
            job.update(status="queued", error=None, finished_at=None, pid=None)
    return _view(ctx, ctx.row("jobs", job_id, "job"))


def _wants_json(request: Request) -> bool:
    if not query_bool(request, "redirect", True):
        return True
    accept, content_type = request.headers.get("accept", ""), request.headers.get("content-type", "")
    return "application/json" in accept or "application/json" in content_type


@router.get("/jobs/{job_id}/download", response_model=None)
async def download(request: Request, job_id: str) -> JSONResponse | RedirectResponse:
    """A signed, expiring link to the export archive: JSON for API clients, else a 302 (``curl -L``)."""
    ctx = request.app.state.ctx
    row = ctx.row("jobs", job_id, "job")
    entry = await run_in_threadpool(archive, ctx.db, ctx.jobs_dir, ctx.state, row)
    expires = int(time.time()) + LINK_SECONDS
    url = (
        f"{str(request.base_url).rstrip('/')}/api/v1/downloads/{job_id}.tar.gz"
        f"?expires={expires}&signature={sign(ctx.token, job_id, expires)}"
    )
    if not _wants_json(request):
        return RedirectResponse(url, status_code=302)
    return JSONResponse(
        {
            "download_url": url,
            "filename": f"{job_id}.tar.gz",
            "bytes": entry["bytes"],
            "sha256": entry["sha256"],
            "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
        }
    )


@router.post("/jobs/{job_id}/exports/hugging-face", status_code=202)
async def hub_export(request: Request, job_id: str) -> dict:
    ctx = request.app.state.ctx
    row = ctx.row("jobs", job_id, "job")
    body = await json_body(request)
    return start_hub_push(ctx.db, ctx.jobs_dir, row, body)


@router.get("/jobs/{job_id}/exports")
def exports(request: Request, job_id: str) -> dict:
    ctx = request.app.state.ctx
    ctx.row("jobs", job_id, "job")
    return {"data": ctx.db.select("SELECT * FROM exports WHERE job_id = ? ORDER BY rowid DESC", (job_id,))}
