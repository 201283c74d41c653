"""The FastAPI app: the service's paths under ``/api/v1/organizations/{org}``, bearer auth on all of them, and one
error shape, ``{"code", "message"}``, for every failure (FastAPI's own ``{"detail": ...}`` never reaches a client).

Any organisation id is accepted: a local server has one store, shared by everyone holding its token.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ftkit.errors import FtkitError, UsageError
from ftkit.job.problems import JobSpecError
from ftkit.server.auth import check_header
from ftkit.server.context import API_PREFIX, Context
from ftkit.server.db import Database, state_dir
from ftkit.server.errors import ApiError
from ftkit.server.jobspec import invalid
from ftkit.server.queue import Scheduler
from ftkit.server.routes import datasets, downloads, files, jobs, models
from ftkit.version import __version__

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


def _error(status: int, body: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return _error(e.status, e.body(), headers)

    @app.exception_handler(JobSpecError)
    async def spec_error(request: Request, e: JobSpecError):
        err = invalid(e.errors)
        return _error(err.status, err.body())

    @app.exception_handler(FtkitError)
    async def ftkit_error(request: Request, e: FtkitError):
        return _error(400 if isinstance(e, UsageError) else 409, {"code": "request_failed", "message": str(e)})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return _error(e.status_code, {"code": _HTTP_CODES.get(e.status_code, "http_error"), "message": str(e.detail)})

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, e: RequestValidationError):
        # the input values are left out on purpose: a body may hold a secret
        parts = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        return _error(422, {"code": "invalid_request", "message": "; ".join(parts)})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        # 500, never 502/503/504: clients retry those, and a retried POST would create a second job
        return _error(500, {"code": "internal_error", "message": f"{type(e).__name__}: {e}"})


def create_app(jobs_dir: str | Path, token: str, workers: int = 1, poll: float = 0.5) -> FastAPI:
    """The API over ``jobs_dir`` (job folders; the server's state in ``<jobs_dir>/.ftkit-server``)."""
    jobs_dir = Path(jobs_dir).resolve()
    state = state_dir(jobs_dir)
    db = Database(state / "server.db")
    ctx = Context(db, jobs_dir, state, token, Scheduler(db, jobs_dir, state, workers, poll))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        ctx.scheduler.start()
        yield
        ctx.scheduler.stop()

    app = FastAPI(title="ftkit fine-tuning API", version=__version__, lifespan=lifespan)
    app.state.ctx = ctx
    _install_error_handlers(app)

    def require_token(request: Request) -> None:
        check_header(request.headers.get("authorization"), ctx.token)

    auth = [Depends(require_token)]
    for module in (models, files, datasets, jobs):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=auth)
    app.include_router(downloads.router)  # signed links: the signature stands in for the token

    @app.get("/healthz")
    def health() -> dict:
        return {"status": "ok", "version": __version__}

    return app
