"""The server's state: one SQLite file (WAL mode) under the jobs directory for files, datasets, jobs and exports.

Job artifacts (checkpoints, metrics, the model) stay in the job folders of :mod:`ftkit.job.store`; the database holds
what the API adds around them: uploaded files, datasets, the queue order and status of each job, Hub exports.
Each call opens its own connection, so the request threads and the queue's thread never share one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

STATE_DIR = ".ftkit-server"  # under the jobs directory; holds no job.json, so the job store never lists it
DB_FILE = "server.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, bytes INTEGER NOT NULL, created_at TEXT NOT NULL,
    columns TEXT NOT NULL, lines INTEGER NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, training_file_id TEXT NOT NULL, validation_file_id TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL, spec TEXT NOT NULL,
    base_model TEXT, dataset_id TEXT NOT NULL, estimated_tokens INTEGER, created_at TEXT NOT NULL,
    queued_at REAL NOT NULL, started_at TEXT, finished_at TEXT, error_code TEXT, error TEXT, pid INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, queued_at);
CREATE TABLE IF NOT EXISTS exports (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, type TEXT NOT NULL, status TEXT NOT NULL,
    huggingface_user_id TEXT, huggingface_repository_id TEXT, url TEXT, error TEXT,
    created_at TEXT NOT NULL, finished_at TEXT
);
CREATE TABLE IF NOT EXISTS archives (
    job_id TEXT PRIMARY KEY, path TEXT NOT NULL, bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, created_at TEXT NOT NULL
);
"""

JSON_COLUMNS = {"columns", "body", "spec"}


def utc_now() -> str:
    """ISO 8601 in UTC with a ``Z``, as the service wrote its timestamps."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_utc(stamp: str | None) -> str | None:
    """A job store timestamp (local time with its offset, ``%Y-%m-%dT%H:%M:%S%z``) in UTC with a ``Z``."""
    if not stamp:
        return None
    try:
        parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return stamp
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id() -> str:
    return str(uuid.uuid4())


def new_job_id(slug: str) -> str:
    """A job's id: its name made filesystem-safe plus 8 random hex digits, so the job folder is readable and two
    jobs of the same name never share one."""
    return f"{slug[:48].rstrip('-.')}-{secrets.token_hex(4)}"


def state_dir(jobs_dir: str | os.PathLike) -> Path:
    return Path(jobs_dir) / STATE_DIR


class Database:
    """The state file of one jobs directory; :meth:`tx` yields a connection inside one transaction."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # readers never wait for the queue's writes; kept in the file
            conn.executescript(SCHEMA)
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @contextlib.contextmanager
    def tx(self):
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def insert(self, table: str, row: dict) -> dict:
        cols = list(row)
        values = [json.dumps(v) if k in JSON_COLUMNS else v for k, v in row.items()]
        with self.tx() as c:
            c.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", values)
        return row

    def update(self, table: str, id_: str, key: str = "id", **fields) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        values = [json.dumps(v) if k in JSON_COLUMNS else v for k, v in fields.items()]
        with self.tx() as c:
            c.execute(f"UPDATE {table} SET {sets} WHERE {key} = ?", [*values, id_])

    def get(self, table: str, id_: str, key: str = "id") -> dict | None:
        rows = self.select(f"SELECT * FROM {table} WHERE {key} = ?", (id_,))
        return rows[0] if rows else None

    def select(self, sql: str, params: tuple = ()) -> list[dict]:
        with self.tx() as c:
            rows = c.execute(sql, params).fetchall()
        return [{k: _load(k, r[k]) for k in r.keys()} for r in rows]

    def delete(self, table: str, id_: str, key: str = "id") -> None:
        with self.tx() as c:
            c.execute(f"DELETE FROM {table} WHERE {key} = ?", (id_,))


def _load(column: str, value):
    return json.loads(value) if column in JSON_COLUMNS and value is not None else value


def enqueue_time() -> float:
    """The queue's order key: jobs run first-in first-out by the time they were (re)queued."""
    return time.time()
