"""ftkit: fine-tune language models on your own GPU or CPU with the workflow of the Nscale fine-tuning service.

Heavy libraries (torch, transformers) load only when a function that needs them is called, so ``import ftkit``
and ``ftkit --help`` stay fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {}


def _export(module: str, *names: str) -> None:
    for n in names:
        _EXPORTS[n] = module


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'ftkit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


from . import cookbook  # noqa: E402,F401  (light at import time: notebooks call ftkit.cookbook.*)

_export(".bundled", "BundledModelMissing")
_export(".train", "run_job")
_export(".jobs", "get_job", "list_jobs", "jobs_table", "cancel", "JobError")
_export(".pubmedqa", "prepare_pubmedqa", "load_pqal", "load_test_truth")
_export(".prepared", "PreparedDataset")
_export(".datacheck", "check_dataset")
_export(".datareport", "DatasetReport")
_export(".tokencount", "count_chat_tokens")
_export(
    ".spec",
    "JobSpec",
    "DatasetSpec",
    "Hyperparameters",
    "LoraSpec",
    "LocalSettings",
    "DatasetFiles",
    "load_job",
    "save_job",
    "fields_table",
    "JobSpecError",
    "JobSpecWarning",
    "SpecProblem",
)
_export(".catalog", "ModelInfo", "resolve_model", "list_models", "catalog_table", "UnknownModelError")
_export(".plots", "plot_metrics", "LivePlot")
_export(".export", "export_job", "ExportError")
_export(".archive", "load_exported", "extract_archive", "UnsafeArchiveError")
_export(".hub", "push_to_hub", "HubError")
_export(
    ".evaluate",
    "evaluate",
    "compare",
    "score_against_truth",
    "majority_baseline",
    "read_eval_data",
    "EvalDataError",
)
_export(".metrics", "EvalResult", "plot_confusion", "classification_metrics")
_export(".generate", "generate", "sample_answers")
_export(".inference", "load_for_inference", "ModelRefError")
_export(".estimate", "estimate", "Estimate")
_export(".form", "JobForm")
_export(".tokenview", "render_trained_tokens")
