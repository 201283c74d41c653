"""ftkit: fine-tune language models on your own GPU or CPU with the workflow of the Nscale fine-tuning service.

The package reads as the pipeline, one subpackage per stage; a stage imports only the stages before it
(``tests/test_layout.py`` enforces this):

- ``ftkit.models``: the catalog, the bundled model, loading models, tokenizers and exported archives
- ``ftkit.data``: CSV reading and checks, prepared datasets, encoding rows into tokens, PubMedQA
- ``ftkit.job``: the job spec (the service's body), its checks and problems, job files, the job store
- ``ftkit.results``: inference, evaluation, scores, generation, metric plots (training scores its validation rows
  with them, so this stage comes before ``ftkit.train``)
- ``ftkit.train``: the step plan, the training engine, its Trainer and callback, task metrics, the estimate
- ``ftkit.export``: export archives, merged models, the model card, the Hub push
- ``ftkit.server``: the service's REST API on this machine (``ftkit serve``) with a job queue
- ``ftkit.cookbook``: what the notebooks call (helpers, the form, the token view, the notebook runner)
- ``ftkit.cli``: the ``ftkit`` command

Every public function is also reachable here (``ftkit.load_job``, ``ftkit.run_job``, ``ftkit.evaluate``, ...).
They load on first use, so ``import ftkit`` stays fast and heavy libraries (torch, transformers) load only when a
function that needs them is called.
"""

from __future__ import annotations

import importlib

from ftkit.errors import FtkitError, UsageError
from ftkit.version import __version__

# public name -> module that defines it
_EXPORTS: dict[str, str] = {}
_STAGES = ("models", "data", "job", "results", "train", "export", "server", "cookbook", "cli")


def _export(module: str, *names: str) -> None:
    for n in names:
        _EXPORTS[n] = module


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _STAGES:
        return importlib.import_module(f"ftkit.{name}")
    raise AttributeError(f"module 'ftkit' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS, *_STAGES])


_export("ftkit.models.bundled", "BundledModelMissing")
_export("ftkit.models.catalog", "ModelInfo", "resolve_model", "list_models", "catalog_table", "UnknownModelError")
_export("ftkit.models.exported", "load_exported", "extract_archive", "UnsafeArchiveError")
_export("ftkit.data.pubmedqa.prepare", "prepare_pubmedqa")
_export("ftkit.data.pubmedqa.official", "load_pqal", "load_test_truth")
_export("ftkit.data.prepared", "PreparedDataset")
_export("ftkit.data.checks", "check_dataset")
_export("ftkit.data.report", "DatasetReport")
_export("ftkit.data.tokens", "count_chat_tokens")
_export(
    "ftkit.job.spec",
    "JobSpec",
    "DatasetSpec",
    "Hyperparameters",
    "LoraSpec",
    "LocalSettings",
    "load_job",
)
_export("ftkit.job.datafiles", "DatasetFiles")
_export("ftkit.job.save", "save_job", "fields_table")
_export("ftkit.job.problems", "JobSpecError", "JobSpecWarning", "SpecProblem")
_export("ftkit.job.store", "get_job", "list_jobs", "jobs_table", "cancel", "JobError")
_export("ftkit.train.engine", "run_job")
_export("ftkit.train.estimate", "estimate", "Estimate")
_export(
    "ftkit.results.evaluation",
    "evaluate",
    "compare",
    "score_against_truth",
    "majority_baseline",
    "read_eval_data",
    "EvalDataError",
)
_export("ftkit.results.scores", "EvalResult", "classification_metrics")
_export("ftkit.results.figures", "plot_confusion")
_export("ftkit.results.generation", "generate", "sample_answers")
_export("ftkit.results.inference", "load_for_inference", "ModelRefError")
_export("ftkit.results.plots", "plot_metrics", "LivePlot")
_export("ftkit.export.stage", "export_job", "ExportError")
_export("ftkit.export.hub", "push_to_hub", "HubError")
_export("ftkit.client", "FineTuningClient")
_export("ftkit.server.background", "start_server", "LocalServer")
_export("ftkit.cookbook.form", "JobForm")
_export("ftkit.cookbook.tokenview", "render_trained_tokens")

__all__ = ["FtkitError", "UsageError", "__version__", *_EXPORTS]
