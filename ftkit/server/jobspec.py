"""From the service's job body to a local job: the dataset id becomes the uploaded CSVs, the body is validated by
:func:`ftkit.job.spec.load_job` and the data by :func:`ftkit.data.checks.check_dataset`, every problem at once.

The body may carry ftkit's ``local`` section (seed, max_seq_length, max_steps, precision, ...), except the two
settings the server owns: ``local.output_dir`` (``ftkit serve --jobs-dir``) and ``local.validation_file`` (the
dataset's ``validation_file_id``).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

from ftkit.data.checks import check_dataset
from ftkit.job.problems import MISSING, JobSpecError, JobSpecWarning, SpecProblem
from ftkit.job.spec import JobSpec, load_job
from ftkit.job.store import job_id_for
from ftkit.server.db import Database, new_job_id
from ftkit.server.errors import ApiError
from ftkit.train.estimate import estimate

SERVER_OWNED = {
    "output_dir": "set by the server (ftkit serve --jobs-dir)",
    "validation_file": "comes from the dataset's validation_file_id",
}


def invalid(problems: list[SpecProblem], code: str = "invalid_job") -> ApiError:
    """A 422 whose message lists every problem and whose ``errors`` give each one's field path."""
    errors = [
        {"path": p.path, "message": p.message, "allowed": p.allowed}
        | ({} if p.value is MISSING else {"value": p.value})
        for p in problems
    ]
    return ApiError(422, code, str(JobSpecError(problems)), errors)


def _dataset_files(db: Database, body: dict, problems: list) -> tuple[dict | None, dict | None, dict | None]:
    """(dataset, training file, validation file) rows named by ``dataset.id``; an unknown id is a problem."""
    section = body.get("dataset")
    ds_id = section.get("id") if isinstance(section, dict) else None
    if not isinstance(ds_id, str) or not ds_id:
        return None, None, None  # load_job reports the missing or mistyped field
    ds = db.get("datasets", ds_id)
    if ds is None:
        problems.append(SpecProblem("dataset.id", ds_id, "no dataset with this id", "the id of a POST datasets result"))
        return None, None, None
    train = db.get("files", ds["training_file_id"])
    val = db.get("files", ds["validation_file_id"]) if ds["validation_file_id"] else None
    return ds, train, val


def local_body(db: Database, body: dict) -> tuple[dict, dict | None, dict | None, dict | None, list[SpecProblem]]:
    """The body with the dataset id replaced by the uploaded files' paths; and the problems found doing so."""
    problems: list[SpecProblem] = []
    out = copy.deepcopy(body)
    local = out.get("local")
    if isinstance(local, dict):
        for key, why in SERVER_OWNED.items():
            if key in local:
                problems.append(SpecProblem(f"local.{key}", local.pop(key), f"cannot be set through the API: {why}"))
    ds, train, val = _dataset_files(db, body, problems)
    if train is not None:
        out["dataset"]["id"] = train["path"]
        if val is not None:
            out["local"] = {**(out.get("local") if isinstance(out.get("local"), dict) else {})}
            out["local"]["validation_file"] = val["path"]
    return out, ds, train, val, problems


def _data_problems(body: dict, ds: dict, train: dict, val: dict | None) -> list[SpecProblem]:
    """The dataset checks of ``ftkit validate`` with the job's columns, as problems at the job's field paths (run
    even when other fields are wrong, so every problem comes back at once)."""
    prompt, answer = body["dataset"].get("prompt_column"), body["dataset"].get("answer_column")
    if not isinstance(answer, str) or not answer or not isinstance(prompt, (str, type(None))):
        return []  # load_job reports the column fields themselves
    names = {train["path"]: train["name"]} | ({val["path"]: val["name"]} if val else {})
    columns = {answer: "dataset.answer_column", prompt: "dataset.prompt_column"}
    report = check_dataset(
        train["path"], val["path"] if val else None, prompt_column=prompt or None, answer_column=answer
    )
    out = []
    for issue in report.errors:
        name = names.get(issue.file, Path(issue.file).name)
        if issue.check == "missing_column":
            out.append(SpecProblem(columns[issue.column], issue.column, f"{name}: {issue.message}", issue.allowed))
        else:
            where = f" {issue.where()}" if issue.where() else ""
            out.append(SpecProblem("dataset.id", ds["id"], f"{name}{where}: {issue.message}", issue.allowed))
    return out


def validate(db: Database, body: Any) -> tuple[JobSpec, dict]:
    """The validated local :class:`JobSpec` of a service body and its dataset row; a 422 lists every problem."""
    if not isinstance(body, dict):
        raise invalid([SpecProblem("(job)", body, "the job body must be a JSON object", "a JSON object")])
    data, ds, train, val, problems = local_body(db, body)
    spec = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", JobSpecWarning)
            spec = load_job(data)
    except JobSpecError as e:
        # paths of uploaded files mean nothing to the client: show the dataset id it sent
        problems += [
            SpecProblem(p.path, body["dataset"]["id"], p.message, p.allowed) if p.path == "dataset.id" and ds else p
            for p in e.errors
        ]
    if ds is not None:
        problems += _data_problems(body, ds, train, val)
    if problems:
        raise invalid(problems)
    return spec, ds


def estimated_tokens(spec: JobSpec) -> int | None:
    """The service's priced tokens (train tokens x epochs + validation tokens x evaluations); no model is loaded."""
    return estimate(spec, measure=False).priced_tokens


def job_row(spec: JobSpec, body: dict, ds: dict, tokens: int | None, queued_at: float, now: str) -> dict:
    """The database row of a new job: the client's body (hyperparameters normalised) and the engine's job body."""
    job_id = new_job_id(job_id_for(spec.name))
    normalized = spec.normalized()
    engine = spec.dump() | {"name": job_id}  # the engine names the job folder after the job's name
    shown = {
        "name": spec.name,
        "base_model_id": spec.base_model_id,
        "dataset": body["dataset"],
        "hyperparameters": normalized["hyperparameters"],
        "local": {k: v for k, v in (body.get("local") or {}).items() if k not in SERVER_OWNED},
    }
    return {
        "id": job_id,
        "name": spec.name,
        "status": "queued",
        "body": shown,
        "spec": engine,
        "base_model": spec.resolved_model().name,
        "dataset_id": ds["id"],
        "estimated_tokens": tokens,
        "created_at": now,
        "queued_at": queued_at,
    }
