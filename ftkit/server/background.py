"""``ftkit serve`` in the background of a Python session (a notebook, a script): start it, get a client, stop it.

The token is made here and handed to the server through ``FTKIT_API_TOKEN``, so nothing is printed or written; the
server's output goes to ``<jobs_dir>/.ftkit-server/serve.log``.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from ftkit.client import FineTuningClient
from ftkit.errors import FtkitError
from ftkit.server.auth import TOKEN_ENV
from ftkit.server.db import state_dir


class ServerStartError(FtkitError, RuntimeError):
    """The background server did not answer: its log's last lines say why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """A running ``ftkit serve`` child process on 127.0.0.1; :meth:`client` talks to it, :meth:`stop` ends it."""

    def __init__(self, proc: subprocess.Popen, url: str, token: str, log: Path):
        self.proc, self.url, self._token, self.log = proc, url, token, log

    def client(self, organization_id: str = "local") -> FineTuningClient:
        return FineTuningClient(self._token, organization_id, self.url)

    def stop(self, timeout: float = 30) -> None:
        """Stop the server (running jobs go on in their own processes; a later server picks them up)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:  # shown in notebooks: no token, no machine-specific path
        return f"LocalServer(127.0.0.1, {'running' if self.proc.poll() is None else 'stopped'})"


def start_server(jobs_dir: str | os.PathLike, port: int | None = None, workers: int = 1, timeout: float = 60):
    """Start ``ftkit serve`` on 127.0.0.1 (a free port unless given) and wait until it answers."""
    jobs = Path(jobs_dir).resolve()
    log = state_dir(jobs) / "serve.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    token = secrets.token_urlsafe(32)
    cmd = [sys.executable, "-m", "ftkit", "serve", "--port", str(port), "--jobs-dir", str(jobs)]
    with open(log, "a", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [*cmd, "--workers", str(workers)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, TOKEN_ENV: token},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(f"{url}/healthz", timeout=2).ok:
                return LocalServer(proc, url, token, log)
        except requests.ConnectionError:
            time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-10:])
    raise ServerStartError(f"ftkit serve did not answer on {url} within {timeout:g} s; its log ends:\n{tail}")
