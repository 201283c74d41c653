"""Reading job files: JSON or YAML (duplicate keys are errors, not silently overwritten), and the YAML layout
of the service's public demo client (``model`` / ``training`` / ``lora`` / ``dataset`` sections) mapped to the
service body."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ftkit.errors import FtkitError, UsageError
from ftkit.job.problems import JobSpecError, SpecProblem


class JobFileNotFound(FtkitError, FileNotFoundError):
    """A job file path that names no file."""


class JobFileError(FtkitError, ValueError):
    """A job file path that names something other than a file (a folder)."""


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(f"key {k!r} appears twice in the same object")
        out[k] = v
    return out


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in the same mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse(text: str, kind: str, label: str | None) -> Any:
    try:
        if kind == "json":
            return json.loads(text, object_pairs_hook=_no_duplicates)
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except json.JSONDecodeError as e:
        msg = f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
    except _DuplicateKey as e:
        msg = f"invalid JSON: {e}"
    except yaml.YAMLError as e:
        msg = f"invalid YAML: {' '.join(str(e).split())}"
    raise JobSpecError([SpecProblem("(file)", label or "(text)", msg, f"a {kind.upper()} object")], label)


def read_job_source(source: Any) -> tuple[str | None, Any, Path | None]:
    """(label for messages, parsed body, folder for relative paths) for a dict, text or file path."""
    if isinstance(source, Mapping):
        return None, dict(source), None
    if isinstance(source, str) and (source.lstrip().startswith("{") or "\n" in source):
        kind = "json" if source.lstrip().startswith("{") else "yaml"
        return None, _parse(source, kind, None), None
    if not isinstance(source, (str, os.PathLike)):
        raise UsageError(f"a job is a dict, JSON/YAML text or a file path, not {type(source).__name__}")
    path = Path(source).expanduser()
    kind = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}.get(path.suffix.lower())
    if kind is None:
        raise JobSpecError([SpecProblem("(file)", str(path), "unsupported job file type", ".json, .yaml or .yml")])
    if path.is_dir():
        raise JobFileError(f"{path} is a folder, not a job file (give the .json, .yaml or .yml file itself)")
    if not path.is_file():
        raise JobFileNotFound(f"job file not found: {path}")
    return str(path), _parse(_read_text(path, kind), kind, str(path)), path.resolve().parent


def _read_text(path: Path, kind: str) -> str:
    def problem(message: str, allowed: str) -> JobSpecError:
        return JobSpecError([SpecProblem("(file)", str(path), message, allowed)], str(path))

    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        where = f"byte 0x{data[e.start]:02x} at offset {e.start}"
        raise problem(f"is not UTF-8 text ({where}): a binary file?", f"a UTF-8 {kind.upper()} file") from None
    if not text.strip():
        raise problem("is empty", "a JSON object / YAML mapping of the job's fields")
    return text


# demo-client section -> {key: dotted path in the service body (None: accepted, not used locally)}
DEMO_SECTIONS: dict[str, dict[str, str | None]] = {
    "model": {"base_model": "base_model_id"},
    "training": {
        "batch_size": "hyperparameters.batch_size",
        "learning_rate": "hyperparameters.learning_rate",
        "num_epochs": "hyperparameters.n_epochs",
        "num_evaluations": "hyperparameters.n_evals",
        "weight_decay": "hyperparameters.weight_decay",
        "warmup_ratio": "hyperparameters.warmup_ratio",
        "mask_prompt_labels": "hyperparameters.mask_prompt_labels",
        "best_checkpoints": "hyperparameters.best_checkpoints",
    },
    "lora": {k: f"hyperparameters.lora.{k}" for k in ("enabled", "alpha", "r", "dropout", "trainable_modules")},
    "dataset": {
        "prompt_column": "dataset.prompt_column",
        "answer_column": "dataset.answer_column",
        "train_file": "dataset.id",
        "validation_file": "local.validation_file",
        "name": None,
    },
    "job": {"name": "name"},
    "api": {"fine_tuning_base_url": None, "inference_base_url": None, "timeout": None},
}
_DEMO_ONLY = {"model", "training", "lora", "job", "api"}
_SERVICE_ONLY = {"base_model_id", "hyperparameters"}


def to_service_layout(raw: Any, label: str | None):
    """(service body, problems, notes, origin) of a parsed job file in either layout (see :func:`from_demo_layout`)."""
    if not isinstance(raw, dict):
        problem = SpecProblem("(job)", raw, "a job must be a mapping of fields", "a JSON object / YAML mapping")
        raise JobSpecError([problem], label)
    if is_demo_layout(raw):
        return from_demo_layout(raw, label)
    return raw, [], [], {}


def is_demo_layout(raw: dict) -> bool:
    dataset = raw.get("dataset")
    return bool(_DEMO_ONLY & set(raw)) or (isinstance(dataset, dict) and "train_file" in dataset)


def _put(out: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        out = out.setdefault(p, {})
    out[leaf] = value


def from_demo_layout(raw: dict, label: str | None):
    """(service body, problems, notes, origin) for the demo client's YAML; ``origin`` maps service paths back
    to where they are in the user's file (see :func:`rename`)."""
    body: dict = {}
    problems: list[SpecProblem] = []
    notes: list[str] = []
    unused: list[str] = []
    origin: dict[str, str] = {}  # service path -> the user's path
    mixed = sorted(_SERVICE_ONLY & set(raw))
    for key in mixed:
        problems.append(
            SpecProblem(
                key,
                raw[key],
                "mixes the service body with the demo client's layout (model, training, lora sections)",
                "one layout per file",
            )
        )

    def assign(target: str, where: str, v: Any) -> None:
        if target in origin and _get(body, target) != v:
            problems.append(
                SpecProblem(
                    where,
                    v,
                    f"disagrees with {origin[target]}={_get(body, target)!r}",
                    "the same value in both places, or only one of them",
                )
            )
        else:
            _put(body, target, v)
            origin.setdefault(target, where)

    sections = [*DEMO_SECTIONS, "name", "local"]
    for section, value in raw.items():
        if section in mixed:
            continue
        if section == "name":
            assign("name", "name", value)
            continue
        if section == "local" and isinstance(value, dict):
            for key, v in value.items():
                assign(f"local.{key}", f"local.{key}", v)
            continue
        if section == "local":
            body["local"] = value  # not a mapping: validation says so
            continue
        keys = DEMO_SECTIONS.get(section)
        if keys is None:
            close = difflib.get_close_matches(str(section), sections, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                SpecProblem(str(section), value, f"unknown section{hint}", "sections: " + ", ".join(sections))
            )
            continue
        if value is None:
            continue
        if not isinstance(value, dict):
            problems.append(SpecProblem(section, value, "must be a mapping", "keys: " + ", ".join(keys)))
            continue
        for key, v in value.items():
            where = f"{section}.{key}"
            if key not in keys:
                close = difflib.get_close_matches(str(key), list(keys), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(SpecProblem(where, v, f"unknown key{hint}", "keys: " + ", ".join(keys)))
            elif keys[key] is None:
                unused.append(where)
            else:
                assign(keys[key], where, v)
    if "name" not in body:
        name = Path(label).stem if label else "finetune-job"
        body["name"] = name
        notes.append(f"no job name (name or job.name) given: the job is named {name!r} after its file")
    if unused:
        notes.append(f"{', '.join(unused)}: settings of the service's demo client, not used locally")
    origin.setdefault("base_model_id", "model.base_model")
    origin.setdefault("dataset.id", "dataset.train_file")
    origin.setdefault("hyperparameters.lora", "lora")
    origin.setdefault("hyperparameters", "training")
    return body, problems, notes, origin


def rename(p: SpecProblem, origin: dict[str, str]) -> SpecProblem:
    """The problem with its path as the user wrote it (``origin`` maps service paths to the user's paths)."""
    for service_path in sorted(origin, key=len, reverse=True):
        if p.path == service_path or p.path.startswith((service_path + ".", service_path + "[")):
            return SpecProblem(origin[service_path] + p.path[len(service_path) :], p.value, p.message, p.allowed)
    return p


def _get(body: dict, path: str) -> Any:
    for p in path.split("."):
        body = body.get(p, {}) if isinstance(body, dict) else {}
    return body
