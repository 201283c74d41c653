"""Job-spec problems in words a user can act on: pydantic's errors translated to field path, value, message
and the allowed values (read from the same models, so messages and the README's fields table never drift)."""

from __future__ import annotations

import difflib
import json
import types
import typing
from dataclasses import dataclass
from typing import Any

import annotated_types
from pydantic import BaseModel, ValidationError

from ftkit.errors import FtkitError

MISSING = "(missing)"

# Names people reach for, mapped to the field they mean (dotted path from the top of the body).
SYNONYMS = {
    "num_epochs": "hyperparameters.n_epochs",
    "epochs": "hyperparameters.n_epochs",
    "num_evaluations": "hyperparameters.n_evals",
    "n_evaluations": "hyperparameters.n_evals",
    "lr": "hyperparameters.learning_rate",
    "rank": "hyperparameters.lora.r",
    "lora_r": "hyperparameters.lora.r",
    "lora_alpha": "hyperparameters.lora.alpha",
    "lora_dropout": "hyperparameters.lora.dropout",
    "target_modules": "hyperparameters.lora.trainable_modules",
    "model": "base_model_id",
    "base_model": "base_model_id",
    "model_id": "base_model_id",
    "train_file": "dataset.id",
    "validation_file": "local.validation_file",
    "warmup_steps": "hyperparameters.warmup_ratio",
}


@dataclass(frozen=True)
class SpecProblem:
    """One problem in a job: where (dotted field path), the value found, what is wrong and what is allowed."""

    path: str
    value: Any
    message: str
    allowed: str | None = None

    def __str__(self) -> str:
        parts = [] if self.value is MISSING else [f"got {_show(self.value)}"]
        parts += [f"allowed: {self.allowed}"] if self.allowed else []
        return f"{self.path}: {self.message}" + (f" ({'; '.join(parts)})" if parts else "")


class JobSpecError(FtkitError, ValueError):
    """Every problem found in a job specification; ``errors`` lists them as :class:`SpecProblem`."""

    def __init__(self, errors: list[SpecProblem], source: str | None = None):
        self.errors = list(errors)
        self.source = source
        where = f"{source}: " if source else ""
        n = len(self.errors)
        lines = [f"{where}{n} problem{'s' if n != 1 else ''} in the job specification:"]
        lines += [f"  - {p}" for p in self.errors]
        super().__init__("\n".join(lines))


class JobSpecWarning(UserWarning):
    """Something in a job that is accepted but worth knowing (an alias read, rows held out, ...)."""


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _models_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _field_at(root: type[BaseModel], loc: tuple) -> tuple[type[BaseModel] | None, str | None, Any, bool]:
    """(model holding the field, field name, FieldInfo, loc points at a list item) for an error loc."""
    cls: type[BaseModel] | None = root
    parent, name, info, item = None, None, None, False
    for part in loc:
        if isinstance(part, int):
            item = True
            continue
        if cls is None or part not in cls.model_fields:
            return cls, None, None, item
        parent, name, info, item = cls, part, cls.model_fields[part], False
        cls = _models_in(info.annotation)
    return parent, name, info, item


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """Strip Optional and Annotated: (inner type, whether None is allowed)."""
    nullable = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            nullable = nullable or len(args) < len(typing.get_args(annotation))
            annotation = args[0]
        else:
            return annotation, nullable


def _num(v: Any) -> str:
    return format(v, "g") if isinstance(v, float) else str(v)


def type_name(info: Any) -> str:
    t, nullable = _base_type(info.annotation)
    origin = typing.get_origin(t)
    if origin is typing.Literal:
        name = "string"
    elif origin is list:
        name = "list of strings"
    elif _models_in(t):
        name = "object"
    else:
        name = {int: "integer", float: "number", bool: "boolean", str: "string"}.get(t, getattr(t, "__name__", str(t)))
    return f"{name} or null" if nullable else name


def allowed_text(info: Any, item: bool = False) -> str:
    """The values a field accepts, in words."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    t, nullable = _base_type(info.annotation)
    if typing.get_origin(t) is list:
        choices = typing.get_args(_base_type(typing.get_args(t)[0])[0])
        if item:
            return "one of " + ", ".join(choices)
    if "allowed" in extra:
        return extra["allowed"]
    if typing.get_origin(t) is typing.Literal:
        text = "one of " + ", ".join(typing.get_args(t))
    elif t is bool:
        text = "true or false"
    elif _models_in(t):
        text = "an object with fields " + ", ".join(_models_in(t).model_fields)
    else:
        lo = hi = None
        for m in info.metadata:
            if isinstance(m, annotated_types.Ge):
                lo = m.ge
            elif isinstance(m, annotated_types.Le):
                hi = m.le
        if t is int and lo is not None and hi is not None:
            text = f"{lo}..{hi}"
        elif lo is not None and hi is not None:
            text = f"{_num(lo)} <= value <= {_num(hi)}"
        elif lo is not None:
            text = f">= {_num(lo)}" + (" (integer)" if t is int else "")
        elif t is str:
            text = "a non-empty string"
        else:
            text = type_name(info)
    return f"{text}, or null" if nullable else text


def suggest(key: str, cls: type[BaseModel] | None, root: type[BaseModel], prefix: str = "") -> str:
    """'did you mean ...' for an unknown key: a close sibling, a synonym, or the name in another section."""
    target = SYNONYMS.get(key.lower())
    siblings = list(cls.model_fields) if cls else []
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.6)
    if target is None and close:
        target = close[0]
    if target is None:
        paths = all_paths(root)
        leaves = {p.rsplit(".", 1)[-1]: p for p in paths}
        near = difflib.get_close_matches(key, list(leaves), n=1, cutoff=0.8)
        target = leaves[near[0]] if near else None
    if target and "." in target and target.rsplit(".", 1)[0] == prefix:
        target = target.rsplit(".", 1)[1]  # a field of the same section: its name is enough
    return f"; did you mean {target!r}?" if target else ""


def all_paths(root: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in root.model_fields.items():
        path = f"{prefix}{name}"
        sub = _models_in(info.annotation)
        out += all_paths(sub, path + ".") if sub else [path]
    return out


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(job)"


_MESSAGES = {
    "missing": "is required",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be an object (a mapping of fields)",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object (a mapping of fields)",
    "literal_error": "is not one of the allowed values",
    "string_too_short": "must not be empty",
    "string_pattern_mismatch": "needs at least one letter or digit",
    "greater_than_equal": "is too small",
    "less_than_equal": "is too large",
    "greater_than": "is too small",
    "less_than": "is too large",
}


def translate(exc: ValidationError, root: type[BaseModel]) -> list[SpecProblem]:
    """pydantic's errors as :class:`SpecProblem` s (never a raw pydantic dump)."""
    out: list[SpecProblem] = []
    for e in exc.errors(include_url=False):
        loc, kind, ctx = tuple(e["loc"]), e["type"], e.get("ctx") or {}
        if kind == "ftkit_problems":
            out += ctx["problems"]
            continue
        path = _path(loc)
        value = MISSING if kind == "missing" else e.get("input")
        cls, name, info, item = _field_at(root, loc)
        if kind == "extra_forbidden":
            hint = suggest(str(loc[-1]), cls, root, ".".join(str(p) for p in loc[:-1]))
            fields = ", ".join(cls.model_fields) if cls else ""
            out.append(SpecProblem(path, value, f"unknown field{hint}", f"fields here: {fields}"))
            continue
        message = _MESSAGES.get(kind) or (e["msg"].removeprefix("Value error, ") if kind == "value_error" else e["msg"])
        allowed = allowed_text(info, item) if info is not None else None
        out.append(SpecProblem(path, value, message, allowed))
    return out


def field_rows(root: type[BaseModel], prefix: str = "") -> list[dict]:
    """One row per leaf field of ``root``: field path, type, default, allowed values, meaning."""
    rows = []
    for name, info in root.model_fields.items():
        path = f"{prefix}{name}"
        sub = _models_in(info.annotation)
        if sub:
            rows += field_rows(sub, path + ".")
            continue
        if info.is_required():
            default = "required"
        else:
            d = info.get_default(call_default_factory=True)
            default = "null" if d is None else f"`{json.dumps(d)}`"
        meaning = " ".join((info.description or "").split())
        rows.append(
            {
                "field": path,
                "type": type_name(info),
                "default": default,
                "allowed": allowed_text(info),
                "meaning": meaning,
            }
        )
    return rows
