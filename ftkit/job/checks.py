"""Checks that span several job fields (the model's batch sizes, aliases against the fields they set, ...).

They read the raw body field by field, each value validated on its own, so they still run, and report, when
other fields of the same job are wrong: ``load_job`` reports every problem at once.
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from ftkit.job.aliases import ALIAS_OF, alias_mapping, same
from ftkit.job.problems import SpecProblem
from ftkit.models.catalog import (
    BUNDLED,
    CATALOG,
    MODEL_REF_HELP,
    UnknownModelError,
    batch_sizes_text,
    close_matches,
    resolve_model,
)
from ftkit.models.loading import BITSANDBYTES_MISSING, bitsandbytes_installed

_ABSENT = object()


@functools.cache
def _adapter(root: type[BaseModel], path: str):
    cls = root
    *parents, leaf = path.split(".")
    for p in parents:
        cls = cls.model_fields[p].annotation
    info = cls.model_fields[leaf]
    default = _ABSENT if info.is_required() else info.get_default(call_default_factory=True)
    annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return TypeAdapter(annotation), default


class _Body:
    """Field values of a raw body, each validated alone: ``get`` gives (valid, value); absent = default."""

    def __init__(self, data: dict, root: type[BaseModel]):
        self.data, self.root = data, root

    def raw(self, path: str) -> Any:
        node: Any = self.data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return _ABSENT
            node = node[part]
        return node

    def given(self, path: str) -> bool:
        return self.raw(path) is not _ABSENT

    def get(self, path: str) -> tuple[bool, Any]:
        adapter, default = _adapter(self.root, path)
        value = self.raw(path)
        if value is _ABSENT:
            return default is not _ABSENT, None if default is _ABSENT else default
        try:
            return True, adapter.validate_python(value)
        except ValidationError:
            return False, None


def cross_checks(data: dict, base_dir: Path | None, root: type[BaseModel]):
    """(problems, notes, ModelInfo or None) for the checks that need more than one field of the body ``data``;
    ``root`` is the job model (:class:`ftkit.job.spec.JobSpec`) whose fields validate each value alone."""
    body = _Body(data, root)
    problems: list[SpecProblem] = []
    notes: list[str] = []
    base = base_dir or Path.cwd()
    info = _model_checks(body, base, problems, notes)
    n_evals = _alias_checks(body, problems, notes)
    _size_checks(body, info, problems)
    _column_checks(body, problems, notes)
    _task_metric_checks(body, problems)
    _scale_checks(body, problems)
    _evaluation_notes(body, base, n_evals, notes)
    return problems, notes, info


def _model_checks(body: _Body, base: Path, problems: list, notes: list):
    """The base model reference, and the batch size against the model's; returns the model's info or None."""
    ok, ref = body.get("base_model_id")
    info = None
    if ok and ref:
        try:
            info = resolve_model(ref, base)
        except UnknownModelError as e:
            problems.append(SpecProblem("base_model_id", ref, e.reason, MODEL_REF_HELP))
    if info is not None and info.kind == "hub":
        near = difflib.get_close_matches(ref.lower(), [m.hf_repo.lower() for m in CATALOG], n=1, cutoff=0.85)
        hint = f" Did you mean the catalog model {close_matches(near[0], n=1)[0]!r}?" if near else ""
        notes.append(
            f"base_model_id {ref!r} is not in the catalog nor a local folder: it is read as a Hugging "
            f"Face repo id and downloaded when the job runs (needs network or the HF cache).{hint}"
        )
    if info is BUNDLED and ref.lower() == BUNDLED.hf_repo.lower():
        notes.append(f"base_model_id {ref!r} is served from ftkit's bundled copy of {BUNDLED.name} (no download)")
    ok_bs, batch = body.get("hyperparameters.batch_size")
    if info is not None and ok_bs and batch not in info.batch_sizes:
        problems.append(
            SpecProblem(
                "hyperparameters.batch_size",
                batch,
                f"is not a batch size {info.name} supports",
                f"one of {batch_sizes_text(info.batch_sizes)}",
            )
        )
    return info


def _alias_checks(body: _Body, problems: list, notes: list):
    """The docs' example uses two fields its own field list does not define: read them, say how, never silently.
    Returns the effective n_evals (None when it cannot be known)."""
    ok_ep, n_epochs = body.get("hyperparameters.n_epochs")
    ok_k, k = body.get("hyperparameters.evaluation_epochs")
    ok_w, w = body.get("hyperparameters.warmup_epochs")
    n_evals = body.get("hyperparameters.n_evals")[1]
    if not (ok_ep and ok_k and ok_w):
        return n_evals
    for field, value, explanation in alias_mapping(n_epochs, k, w):
        alias = ALIAS_OF[field]
        ok_f, given = body.get(f"hyperparameters.{field}")
        if body.given(f"hyperparameters.{field}") and ok_f and not same(given, value):
            problems.append(
                SpecProblem(
                    f"hyperparameters.{alias}",
                    body.raw(f"hyperparameters.{alias}"),
                    f"{explanation}, but {field} is {given}",
                    f"only one of {alias} and {field}, or values that agree",
                )
            )
            continue
        notes.append(f"hyperparameters.{alias} is not in the service's documented field list; {explanation}")
        if field == "n_evals":
            n_evals = value
            if value == 0 and k:
                notes.append(f"evaluation_epochs={k} is more than n_epochs={n_epochs}: no evaluation will run")
    return n_evals


def _size_checks(body: _Body, info, problems: list) -> None:
    """The micro-batch against the batch, the sequence length against the model, fp16 against the CPU."""
    ok_bs, batch = body.get("hyperparameters.batch_size")
    ok_m, micro = body.get("local.micro_batch_size")
    if ok_m and micro and ok_bs and (micro > batch or batch % micro):
        divisors = [d for d in range(1, batch + 1) if batch % d == 0]
        problems.append(
            SpecProblem(
                "local.micro_batch_size",
                micro,
                f"does not divide batch_size {batch}, so gradient accumulation cannot keep the effective batch",
                "one of " + ", ".join(map(str, divisors)),
            )
        )
    ok_len, max_len = body.get("local.max_seq_length")
    context = info.known_context_length if info is not None else None
    if ok_len and max_len and context and max_len > context:
        problems.append(
            SpecProblem(
                "local.max_seq_length",
                max_len,
                f"is longer than {info.name}'s context length {context}",
                f"8..{context}",
            )
        )
    if body.get("local.device")[1] == "cpu" and body.get("local.precision")[1] == "fp16":
        problems.append(
            SpecProblem(
                "local.precision",
                "fp16",
                "fp16 cannot train on CPU (local.device is cpu)",
                "auto, fp32 or bf16 on CPU",
            )
        )


def _column_checks(body: _Body, problems: list, notes: list) -> None:
    ok_p, prompt = body.get("dataset.prompt_column")
    ok_a, answer = body.get("dataset.answer_column")
    if ok_p and ok_a and prompt is not None and prompt == answer:
        problems.append(
            SpecProblem(
                "dataset.prompt_column",
                prompt,
                "is the same column as answer_column",
                "a column other than answer_column",
            )
        )
    if body.get("hyperparameters.mask_prompt_labels")[1] and ok_p and prompt is None:
        notes.append("mask_prompt_labels=true has no effect without a dataset.prompt_column")


def _task_metric_checks(body: _Body, problems: list) -> None:
    ok_m, metric = body.get("local.best_metric")
    ok_l, labels = body.get("local.labels")
    ok_w, weights = body.get("local.class_weights")
    if ok_w and ok_l and weights != "none" and labels == []:
        problems.append(
            SpecProblem(
                "local.class_weights",
                weights,
                "weighs rows by their labels, but local.labels [] turns labels off",
                "none, or give local.labels (null = auto)",
            )
        )
    if ok_m and ok_l and metric != "eval_loss" and labels == []:
        problems.append(
            SpecProblem(
                "local.best_metric",
                metric,
                "is a task metric, but local.labels [] turns task metrics off",
                "eval_loss, or give local.labels (null = auto)",
            )
        )


def _scale_checks(body: _Body, problems: list) -> None:
    """local.distributed and local.quantization against the device, LoRA and each other."""
    device = body.get("local.device")[1]
    ok_d, distributed = body.get("local.distributed")
    ok_q, quant = body.get("local.quantization")
    if ok_d and distributed == "fsdp" and device == "mps":
        problems.append(
            SpecProblem(
                "local.distributed",
                "fsdp",
                "FSDP shards over CUDA GPUs (NCCL) or CPU processes (gloo); Apple MPS has no such backend",
                "ddp, or local.device cuda/cpu/auto",
            )
        )
    if not ok_q or quant == "none":
        return
    if not bitsandbytes_installed():  # refused when the job is read, not after its data and model have loaded
        problems.append(SpecProblem("local.quantization", quant, BITSANDBYTES_MISSING))
    if body.get("hyperparameters.lora.enabled") == (True, False):
        problems.append(
            SpecProblem(
                "local.quantization",
                quant,
                "quantised weights are frozen, so only LoRA adapters train on them; lora.enabled is false",
                "none with full fine-tuning, or lora.enabled true",
            )
        )
    if device == "mps":
        problems.append(
            SpecProblem(
                "local.quantization",
                quant,
                "bitsandbytes quantisation runs on CUDA GPUs and CPUs, not Apple MPS (local.device is mps)",
                "none on MPS, or local.device cuda/cpu/auto",
            )
        )
    if ok_d and distributed == "fsdp":
        problems.append(
            SpecProblem(
                "local.quantization",
                quant,
                "a quantised base is not sharded by ftkit's FSDP (local.distributed is fsdp)",
                "none with fsdp, or local.distributed ddp (QLoRA on each GPU)",
            )
        )


def _evaluation_notes(body: _Body, base: Path, n_evals, notes: list) -> None:
    if isinstance(n_evals, int) and n_evals > 0 and not _has_validation(body, base):
        notes.append(
            f"n_evals={n_evals} and no validation file (local.validation_file, or validation.csv in the "
            "dataset folder): as the service did, 1% of the training rows (at least 1) are held out "
            "for evaluation"
        )
    if body.get("hyperparameters.best_checkpoints")[1] and n_evals == 0:
        notes.append(
            "best_checkpoints=true needs evaluations to rank checkpoints; with n_evals=0 the last checkpoint is kept"
        )
    if body.get("hyperparameters.lora.enabled") == (True, False):
        unused = [k for k in ("r", "alpha", "dropout", "trainable_modules") if body.given(f"hyperparameters.lora.{k}")]
        notes.append(
            "lora.enabled=false: full fine-tuning trains every weight (the service offered LoRA only)"
            + (f"; lora.{', lora.'.join(unused)} unused" if unused else "")
        )


def _has_validation(body: _Body, base: Path) -> bool:
    if body.get("local.validation_file")[1]:
        return True
    ok, dataset = body.get("dataset.id")
    if not ok or not dataset:
        return False
    folder = Path(dataset).expanduser()
    folder = folder if folder.is_absolute() else base / folder
    return (folder / "validation.csv").is_file()
