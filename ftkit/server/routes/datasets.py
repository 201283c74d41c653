"""``datasets``: a training file and an optional validation file under one id, as the service paired them."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ftkit.job.problems import MISSING, SpecProblem
from ftkit.server.db import new_id, utc_now
from ftkit.server.errors import conflict
from ftkit.server.jobspec import invalid
from ftkit.server.routes.common import json_body
from ftkit.server.views import dataset_object

router = APIRouter()
FIELDS = ("name", "training_file_id", "validation_file_id")


def _problems(db, body: dict) -> list[SpecProblem]:
    problems = [
        SpecProblem(k, body[k], "unknown field", "fields: " + ", ".join(FIELDS)) for k in body if k not in FIELDS
    ]
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(SpecProblem("name", name if "name" in body else MISSING, "is required", "a non-empty string"))
    for key in ("training_file_id", "validation_file_id"):
        value = body.get(key)
        if value is None and key == "validation_file_id":
            continue  # optional: without it 1% of the training rows are held out, as on the service
        if not isinstance(value, str) or not value:
            problems.append(
                SpecProblem(key, value if key in body else MISSING, "is required", "the id of an uploaded file")
            )
        elif db.get("files", value) is None:
            problems.append(SpecProblem(key, value, "no file with this id", "the id of a POST files result"))
    return problems


@router.post("/datasets")
async def create(request: Request) -> dict:
    ctx, body = request.app.state.ctx, await json_body(request)
    problems = (
        _problems(ctx.db, body)
        if isinstance(body, dict)
        else [SpecProblem("(body)", body, "must be a JSON object", ", ".join(FIELDS))]
    )
    if problems:
        raise invalid(problems, "invalid_dataset")
    row = {
        "id": new_id(),
        "name": body["name"],
        "training_file_id": body["training_file_id"],
        "validation_file_id": body.get("validation_file_id"),
        "created_at": utc_now(),
    }
    return dataset_object(ctx.db.insert("datasets", row))


@router.get("/datasets")
def list_datasets(request: Request) -> dict:
    return {
        "data": [
            dataset_object(r) for r in request.app.state.ctx.db.select("SELECT * FROM datasets ORDER BY rowid DESC")
        ]
    }


@router.get("/datasets/{dataset_id}")
def get_dataset(request: Request, dataset_id: str) -> dict:
    return dataset_object(request.app.state.ctx.row("datasets", dataset_id, "dataset"))


@router.delete("/datasets/{dataset_id}")
def delete_dataset(request: Request, dataset_id: str) -> dict:
    ctx = request.app.state.ctx
    ctx.row("datasets", dataset_id, "dataset")
    active = ctx.db.select(
        "SELECT id FROM jobs WHERE dataset_id = ? AND status IN ('queued', 'starting', 'running')", (dataset_id,)
    )
    if active:
        raise conflict(
            "dataset_in_use",
            f"dataset {dataset_id!r} is used by unfinished job(s) {', '.join(r['id'] for r in active)}",
        )
    ctx.db.delete("datasets", dataset_id)
    return {"id": dataset_id, "object": "dataset", "deleted": True}
