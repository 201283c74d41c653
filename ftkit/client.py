"""A small Python client for the fine-tuning API (``ftkit serve``, or any server with the service's paths).

It has the method names of the service's demo client and docs, so their snippets run against a local server::

    with FineTuningClient(api_token=token, organization_id="local", base_url="http://127.0.0.1:8000") as client:
        client.jobs.download_model(job_id=job_id, output_path="exports/fine_tuned_model.tar.gz")

Errors come back as :class:`ApiError` with the server's ``status``, ``code`` and ``message``. Needs only
``requests``, not the server extra.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import requests

from ftkit.errors import FtkitError

DEFAULT_BASE_URL = "http://127.0.0.1:8000/api/v1"
ENDED = ("completed", "failed", "cancelled")


class ApiError(FtkitError):
    """The server answered with an error: ``status`` (HTTP), ``code`` and ``message`` from its body."""

    def __init__(self, status: int, code: str, message: str, errors: list | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.errors = status, code, message, errors or []


class FineTuningClient:
    """``client.files``, ``client.datasets`` and ``client.jobs`` over one HTTP session with the bearer token."""

    def __init__(self, api_token: str, organization_id: str = "local", base_url: str = DEFAULT_BASE_URL, timeout=120):
        base = base_url.rstrip("/")
        self.base_url = base if base.endswith("/api/v1") else base + "/api/v1"
        self.org_url = f"{self.base_url}/organizations/{organization_id}"
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {api_token}", "Accept": "application/json"})
        self.files = Files(self)
        self.datasets = Datasets(self)
        self.jobs = Jobs(self)

    def base_models(self) -> list[dict]:
        """The models a job can name (``GET base-models``)."""
        return self.request("GET", "base-models")["data"]

    def request(self, method: str, path: str, **kwargs) -> Any:
        response = self.session.request(method, f"{self.org_url}/{path}", timeout=self.timeout, **kwargs)
        if not response.ok:
            raise _error(response)
        return response.json()

    def stream_to(self, url: str, output_path: str | os.PathLike) -> str:
        """Stream ``url`` to ``output_path`` (parent folders made; a partial file never left behind)."""
        out = Path(output_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.part")
        with self.session.get(url, stream=True, timeout=self.timeout) as response:
            if not response.ok:
                raise _error(response)
            try:
                with open(tmp, "wb") as f:
                    for chunk in response.iter_content(chunk_size=1 << 20):
                        f.write(chunk)
                os.replace(tmp, out)
            finally:
                tmp.unlink(missing_ok=True)
        return str(out)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> FineTuningClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _error(response: requests.Response) -> ApiError:
    try:
        body = response.json()
        return ApiError(response.status_code, body.get("code", "unknown"), body.get("message", ""), body.get("errors"))
    except ValueError:
        return ApiError(response.status_code, "unknown", response.text[:500])


class Files:
    def __init__(self, client: FineTuningClient):
        self.client = client

    def upload(self, file_path: str | os.PathLike) -> dict:
        path = Path(file_path)
        with open(path, "rb") as f:
            return self.client.request("POST", "files", files={"file": (path.name, f, "text/csv")})

    def list(self) -> list[dict]:
        return self.client.request("GET", "files")["data"]

    def get(self, file_id: str) -> dict:
        return self.client.request("GET", f"files/{file_id}")

    def delete(self, file_id: str) -> dict:
        return self.client.request("DELETE", f"files/{file_id}")

    def download_file(self, file_id: str, output_path: str | os.PathLike) -> str:
        return self.client.stream_to(self.get(file_id)["download_url"], output_path)


class Datasets:
    def __init__(self, client: FineTuningClient):
        self.client = client

    def create(self, name: str, training_file_id: str, validation_file_id: str | None = None) -> dict:
        body = {"name": name, "training_file_id": training_file_id, "validation_file_id": validation_file_id}
        return self.client.request("POST", "datasets", json=body)

    def list(self) -> list[dict]:
        return self.client.request("GET", "datasets")["data"]

    def get(self, dataset_id: str) -> dict:
        return self.client.request("GET", f"datasets/{dataset_id}")

    def delete(self, dataset_id: str) -> dict:
        return self.client.request("DELETE", f"datasets/{dataset_id}")


class Jobs:
    def __init__(self, client: FineTuningClient):
        self.client = client

    def create(self, body: dict, dry_run: bool = False) -> dict:
        """Submit a job body (the service's fields); returns ``{"dry_run", "estimated_usage", "job", "id"}``."""
        return self.client.request("POST", "jobs", json={**body, "dry_run": dry_run})

    def get(self, job_id: str) -> dict:
        return self.client.request("GET", f"jobs/{job_id}")

    def list(self, status: str | None = None, limit: int = 100) -> list[dict]:
        params = {"limit": limit, "pagination": False} | ({"status": status} if status else {})
        return self.client.request("GET", "jobs", params=params)["data"]

    def cancel(self, job_id: str) -> dict:
        return self.client.request("POST", f"jobs/{job_id}/cancel")

    def resume(self, job_id: str) -> dict:
        return self.client.request("POST", f"jobs/{job_id}/resume")

    def metrics(self, job_id: str) -> list[dict]:
        return self.client.request("GET", f"jobs/{job_id}/metrics")

    def wait(self, job_id: str, poll: float = 2.0, timeout: float | None = None) -> dict:
        """Poll until the job is completed, failed or cancelled; returns the job object."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (job := self.get(job_id))["status"] not in ENDED:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout:g} s")
            time.sleep(poll)
        return job

    def download_model(self, job_id: str, output_path: str | os.PathLike) -> str:
        """Ask for the signed link (as JSON) and stream the ``.tar.gz`` export to ``output_path``."""
        link = self.client.request("GET", f"jobs/{job_id}/download", params={"redirect": "false"})
        return self.client.stream_to(link["download_url"], output_path)

    def export_to_hugging_face(self, job_id: str, user_id: str, access_token: str, repository_id: str) -> dict:
        body = {
            "huggingface_user_id": user_id,
            "huggingface_access_token": access_token,
            "huggingface_repository_id": repository_id,
        }
        return self.client.request("POST", f"jobs/{job_id}/exports/hugging-face", json=body)

    def exports(self, job_id: str) -> list[dict]:
        return self.client.request("GET", f"jobs/{job_id}/exports")["data"]
