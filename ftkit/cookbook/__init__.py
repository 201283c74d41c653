"""On top of the stages: what the cookbook notebooks call.

Owns the notebook helpers (``steps``: one ftkit call per notebook cell), the cookbook's job values (``defaults``),
the job form (``form``, ``formfields``; ipywidgets), the trained-token view (``tokenview``) and running the
notebooks with papermill (``runner``). Imports every stage; the command line (``ftkit.cli``) imports it.
The notebooks call ``ftkit.cookbook.<helper>``, so the helpers of ``steps`` are re-exported here.
Notebook 6 sends the cookbook's job through the local API server (``api``).
"""

from ftkit.cookbook.api import submit_job
from ftkit.cookbook.steps import (
    CookbookPaths,
    build_job,
    export_merged,
    job_ids,
    last_metrics,
    maybe_push,
    paths,
    plot_confusion,
    plot_token_lengths,
    preview_example,
    save_or_keep_job,
    show_json,
    show_rows,
    validation_messages,
)

__all__ = [
    "CookbookPaths",
    "build_job",
    "export_merged",
    "job_ids",
    "last_metrics",
    "maybe_push",
    "paths",
    "plot_confusion",
    "plot_token_lengths",
    "preview_example",
    "save_or_keep_job",
    "show_json",
    "show_rows",
    "submit_job",
    "validation_messages",
]
