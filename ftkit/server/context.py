"""What every request handler reads: the database, the jobs directory, the server's state folder, the token and
the queue (one :class:`Context` per running server)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ftkit.job import store as jobstore
from ftkit.server.db import Database
from ftkit.server.errors import not_found
from ftkit.server.queue import Scheduler

API_PREFIX = "/api/v1/organizations/{org}"


@dataclass
class Context:
    db: Database
    jobs_dir: Path
    state: Path
    token: str
    scheduler: Scheduler

    def row(self, table: str, id_: str, kind: str) -> dict:
        """The row with id ``id_``, or a 404 naming what was asked for."""
        row = self.db.get(table, id_)
        if row is None:
            raise not_found(kind, id_)
        return row

    def job(self, job_id: str) -> jobstore.Job:
        return jobstore.Job(self.jobs_dir / job_id)


def org_base(request) -> str:
    """The absolute URL of the organisation's API root, as the client reached this server."""
    org = request.path_params.get("org", "local")
    return f"{str(request.base_url).rstrip('/')}/api/v1/organizations/{org}"
