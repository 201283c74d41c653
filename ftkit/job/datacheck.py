"""A job's data files checked before anything heavy loads: the same checks as ``ftkit validate``, with the columns
the job names. ``check-job`` and ``train`` run them; an error stops the job before its folder is made, and the
warnings are shown (and written to the job log by training)."""

from __future__ import annotations

from ftkit.data.checks import check_dataset
from ftkit.data.report import DatasetReport, Issue
from ftkit.errors import FtkitError
from ftkit.job.datafiles import DatasetFiles

SHOWN = 20  # problems listed per check and file; `ftkit validate --all` lists every one


class JobDataError(FtkitError, ValueError):
    """A job whose data files have errors (empty answers, a missing column, an unreadable file, ...)."""

    def __init__(self, report: DatasetReport, source: str | None = None):
        self.report = report
        where = f"{source}: " if source else ""
        super().__init__(
            f"{where}the job's data cannot be trained on (the same checks as `ftkit validate`):\n"
            + report.format(limit=SHOWN)
        )


def check_job_data(spec, files: DatasetFiles | None = None) -> DatasetReport:
    """Check the job's training and validation CSVs with its prompt and answer columns; raise
    :class:`JobDataError` listing every error, else return the report (its warnings for the caller to show)."""
    files = files if files is not None else spec.dataset_files()
    report = check_dataset(
        files.train,
        files.validation,
        prompt_column=spec.dataset.prompt_column,
        answer_column=spec.dataset.answer_column,
    )
    if not report.ok:
        raise JobDataError(report, spec.source)
    return report


def warning_lines(report: DatasetReport, limit: int = SHOWN) -> list[str]:
    """One line per warning (``file, line N, row N: message``), at most ``limit``, then a count of the rest."""
    lines = [_line(i) for i in report.warnings[:limit]]
    if len(report.warnings) > limit:
        lines.append(f"... {len(report.warnings) - limit} more warning(s): `ftkit validate --all` lists them")
    return lines


def _line(issue: Issue) -> str:
    where = ", ".join(x for x in (issue.file, issue.where()) if x)
    return f"data warning: {where}: {issue.message}"
