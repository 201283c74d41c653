"""Where a job's data is: the training CSV and the validation CSV named by ``dataset.id`` and
``local.validation_file``, read relative to the job file's folder."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from ftkit.job.files import rename
from ftkit.job.problems import JobSpecError, SpecProblem

_DATASET_ALLOWED = "a CSV file, or a folder with train.csv (and optionally validation.csv)"


class DatasetFiles(NamedTuple):
    train: Path
    validation: Path | None


def path_in(base: Path, p: str) -> Path:
    """``p`` as an absolute path, relative paths read from ``base``."""
    path = Path(p).expanduser()
    return path if path.is_absolute() else base / path


def dataset_files(spec, base: Path) -> DatasetFiles:
    """The training CSV and the validation CSV (or None) of ``spec``; :class:`JobSpecError` names missing files."""
    problems: list[SpecProblem] = []
    where = path_in(base, spec.dataset.id)
    train = validation = None
    if where.is_dir():
        train = where / "train.csv"
        if not train.is_file():
            problems.append(
                SpecProblem("dataset.id", spec.dataset.id, f"folder {where} has no train.csv", _DATASET_ALLOWED)
            )
        if (where / "validation.csv").is_file():
            validation = where / "validation.csv"
    elif where.is_file():
        train = where
    else:
        problems.append(
            SpecProblem("dataset.id", spec.dataset.id, f"no such file or folder: {where}", _DATASET_ALLOWED)
        )
    if spec.local.validation_file:
        validation = path_in(base, spec.local.validation_file)
        if not validation.is_file():
            problems.append(
                SpecProblem(
                    "local.validation_file",
                    spec.local.validation_file,
                    f"no such file: {validation}",
                    "a CSV file",
                )
            )
        elif train is not None and train.is_file() and validation.resolve() == train.resolve():
            problems.append(
                SpecProblem(
                    "local.validation_file",
                    spec.local.validation_file,
                    "is the training file itself",
                    "a CSV file other than the training one",
                )
            )
    if problems:
        raise JobSpecError([rename(p, spec.origin) for p in problems], spec.source)
    return DatasetFiles(train, validation)
