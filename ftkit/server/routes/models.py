"""``GET base-models``: the catalog (the service's ten models) and the bundled CPU model, as ``{"data": [...]}``."""

from __future__ import annotations

from fastapi import APIRouter

from ftkit.models.catalog import list_models

router = APIRouter()


@router.get("/base-models")
def base_models() -> dict:
    return {
        "data": [
            {
                "id": m.id or "bundled",  # the bundled model has no service id: a job names it "bundled"
                "object": "model",
                "name": m.name,
                "organization": m.organization,
                "context_length": m.known_context_length,
                "batch_sizes": list(m.batch_sizes),
                "precision": m.precision,
                "hf_repo": m.hf_repo,
                "kind": m.kind,
            }
            for m in list_models()
        ]
    }
