"""Starting the server: check the bind address, load or make the token, print where to reach it, run uvicorn."""

from __future__ import annotations

import os
from pathlib import Path

from ftkit.errors import UsageError
from ftkit.job.store import jobs_dir as default_jobs_dir
from ftkit.server.auth import TOKEN_ENV, check_bind, load_token
from ftkit.server.db import state_dir
from ftkit.server.queue import gpu_count

EXTRA_HINT = "ftkit serve needs the server extra: pip install 'ftkit[server]' (FastAPI, uvicorn, python-multipart)"


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    jobs_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    log_level: str = "info",
) -> None:
    """Run the API on ``host:port`` until interrupted; jobs run ``workers`` at a time (default: one per GPU, else 1)."""
    check_bind(host)
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: at least one job must be able to run (give 1 or more)")
    try:
        import uvicorn
    except ImportError:
        raise UsageError(EXTRA_HINT) from None
    from ftkit.server.app import create_app  # FastAPI: the optional extra

    jobs = Path(jobs_dir or default_jobs_dir()).resolve()
    token, path, created = load_token(state_dir(jobs))
    workers = workers or max(1, gpu_count())
    print(f"ftkit serve: http://{host}:{port}/api/v1/organizations/<any id>/ (jobs in {jobs}, {workers} at a time)")
    if created:
        print(f"API token (shown this once; kept in {path}, readable only by you): {token}", flush=True)
    else:
        print(f"API token: {'the value of ' + TOKEN_ENV if path is None else 'in ' + str(path)}", flush=True)
    uvicorn.run(create_app(jobs, token, workers), host=host, port=port, log_level=log_level)
