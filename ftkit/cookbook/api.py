"""The cookbook's job through the local API (notebook 6): the same files and body a script for the hosted service
sent, to a server started by :func:`ftkit.server.background.start_server`."""

from __future__ import annotations

import os
import warnings

from ftkit.client import FineTuningClient
from ftkit.job.problems import JobSpecWarning
from ftkit.job.spec import load_job
from ftkit.server.jobspec import SERVER_OWNED


def submit_job(
    client: FineTuningClient,
    job_file: str | os.PathLike,
    name: str | None = None,
    max_steps: int | None = None,
    n_evals: int | None = None,
) -> dict:
    """Upload the job's CSVs, pair them as a dataset and create the job (renamed ``name``; ``max_steps`` caps it,
    ``n_evals`` replaces its number of evaluations).

    Returns the server's answer: ``{"dry_run", "estimated_usage", "job", "id"}``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JobSpecWarning)
        spec = load_job(job_file)
    files = spec.dataset_files()
    train = client.files.upload(files.train)
    validation = client.files.upload(files.validation) if files.validation else None
    dataset = client.datasets.create(f"{spec.name}-data", train["id"], validation and validation["id"])
    body = spec.to_service_dict()
    body["name"] = name or spec.name
    body["dataset"] = {**body["dataset"], "id": dataset["id"]}
    body["local"] = {k: v for k, v in spec.dump().get("local", {}).items() if k not in SERVER_OWNED}
    if max_steps:
        body["local"]["max_steps"] = max_steps
    if n_evals is not None:
        body["hyperparameters"]["n_evals"] = n_evals
    return client.jobs.create(body)
