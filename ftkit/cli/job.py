"""``ftkit models`` (the catalog) and ``ftkit check-job`` (a job's normalised body, or every problem)."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from ftkit.job.datacheck import JobDataError, check_job_data, warning_lines
from ftkit.job.problems import JobSpecError, JobSpecWarning
from ftkit.job.spec import load_job
from ftkit.models import bundled
from ftkit.models.catalog import format_table, list_models, model_rows


def _models(args) -> int:
    if args.json:
        print(json.dumps(model_rows(list_models()), indent=2))
    else:
        print(format_table())
        print(
            f"\nA job's base_model_id may be a catalog id or name, its HF repo id, 'bundled' (the default, "
            f"{bundled.NAME}, served from ftkit's bundled copy), a local model folder or any HF repo id."
        )
    return 0


def _check_job(args) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JobSpecWarning)  # printed below as notes instead
        spec = load_job(Path(args.job))
    files = report = None
    if not args.no_files:
        try:
            files = spec.dataset_files()
            report = check_job_data(spec, files)
        except (JobSpecError, JobDataError) as e:
            e.hint = "use --no-files to check the body without its data files"
            raise
    print(json.dumps(spec.normalized(), indent=2))
    print(f"model: {spec.resolved_model().describe()}", file=sys.stderr)
    if files is not None:
        print(f"train data: {files.train}", file=sys.stderr)
        print(
            f"validation data: {files.validation or 'none (1% of the training rows are held out)'}",
            file=sys.stderr,
        )
    for n in spec.notes:
        print(f"note: {n}", file=sys.stderr)
    for line in warning_lines(report) if report is not None else []:
        print(line, file=sys.stderr)
    print(f"ok: {args.job} is a valid job", file=sys.stderr)
    return 0


def add_parsers(sub) -> None:
    m = sub.add_parser("models", help="list the base models (catalog, bundled) a job can name")
    m.add_argument("--json", action="store_true", help="JSON instead of a table")
    m.set_defaults(func=_models)

    c = sub.add_parser("check-job", help="validate a job file: print its normalised body or its problems")
    c.add_argument("job", help="job file (.json/.yaml/.yml): service body or the demo client's YAML layout")
    c.add_argument("--no-files", action="store_true", help="check the body only, not its data files")
    c.set_defaults(func=_check_job)
