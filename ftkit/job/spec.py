"""The job specification: the Nscale service's job body (same field names, defaults and ranges) plus an
optional ``local`` section for settings that only matter when training on your own machine.

``load_job`` reads a body from a dict, JSON/YAML text or a .json/.yaml/.yml file (the service body or the YAML
layout of the service's demo client) and reports every problem at once in a :class:`JobSpecError`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ftkit.data.labels import check_labels
from ftkit.errors import UsageError
from ftkit.job.aliases import alias_mapping, conflict_message, same
from ftkit.job.checks import cross_checks
from ftkit.job.datafiles import DatasetFiles, dataset_files
from ftkit.job.files import read_job_source, rename, to_service_layout
from ftkit.job.problems import JobSpecError, JobSpecWarning, translate
from ftkit.job.trackers import NO_TRACKER, TRACKERS, missing_message
from ftkit.models.catalog import ModelInfo, resolve_model

LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_CHECKED = "ftkit_checked"  # validation context flag: load_job runs the cross-field checks itself


def _not_bool(v: Any) -> Any:
    # pydantic would read true as 1; in a job file that is almost certainly a mistake
    if isinstance(v, bool):
        raise PydanticCustomError("number_type", "must be a number, not true/false")
    return v


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
Bool = Annotated[bool, Strict()]
Module = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
Tracker = Literal["tensorboard", "mlflow", "wandb", "trackio", "none"]


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True, allow_inf_nan=False
    )


class DatasetSpec(_Section):
    id: str = Field(
        min_length=1,
        json_schema_extra={
            "allowed": "a dataset id; locally a CSV file or a folder with train.csv (and validation.csv)"
        },
    )
    """The dataset to train on. Locally: a CSV file, or a prepared-dataset folder holding train.csv and
    optionally validation.csv; relative paths are read from the job file's folder."""
    prompt_column: str | None = Field(None, min_length=1)
    """Column holding the input prompts (optional: without it the model learns the answers alone)."""
    answer_column: str = Field(min_length=1)
    """Column holding the expected outputs."""


class LoraSpec(_Section):
    enabled: Bool = True
    """Train LoRA adapters (true) or every weight of the model (false: full fine-tuning, which the service did
    not offer yet)."""
    r: Int = Field(8, ge=1, le=64)
    """Rank of the LoRA matrices."""
    alpha: Int = Field(8, ge=1, le=64)
    """Scaling factor of the LoRA update (the update is scaled by alpha / r)."""
    dropout: Float = Field(0.0, ge=0, le=1, json_schema_extra={"allowed": "0 <= dropout < 1"})
    """Dropout probability on the LoRA branch's input. 1.0 (the docs' maximum) would zero the branch, so it is
    refused."""
    trainable_modules: list[Module] = Field(
        default_factory=list,
        json_schema_extra={"allowed": "a list drawn from " + ", ".join(LORA_MODULES) + "; [] = all linear layers"},
    )
    """Projections that get adapters; empty means every linear layer ("all-linear"). A comma-separated string
    is accepted too."""

    @field_validator("trainable_modules", mode="before")
    @classmethod
    def _split_commas(cls, v: Any) -> Any:
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v

    @field_validator("trainable_modules")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dup = sorted({m for m in v if v.count(m) > 1})
        if dup:
            raise PydanticCustomError("duplicate", "lists {dup} more than once", {"dup": ", ".join(dup)})
        return v

    @field_validator("dropout")
    @classmethod
    def _dropout_below_one(cls, v: float) -> float:
        if v >= 1:
            raise PydanticCustomError("dropout_one", "dropout 1.0 zeroes the LoRA branch, so nothing would train")
        return v


class Hyperparameters(_Section):
    n_epochs: Int = Field(1, ge=1, le=20)
    """Complete passes through the training data."""
    n_evals: Int = Field(0, ge=0, le=100)
    """Evaluations on the validation data, spread evenly over training (0 = none)."""
    batch_size: Int = Field(
        4,
        ge=1,
        le=64,
        json_schema_extra={
            "allowed": "one of the model's batch sizes: 4, 8, 12, ..., 32 for catalog models; 1..64 others"
        },
    )
    """Training examples per optimizer step (the effective batch; see local.micro_batch_size)."""
    learning_rate: Float = Field(1e-5, ge=1e-8, le=1e-2)
    """Peak learning rate of the linear schedule."""
    warmup_ratio: Float = Field(0.0, ge=0, le=1)
    """Fraction of the optimizer steps over which the learning rate rises linearly from 0."""
    weight_decay: Float = Field(0.0, ge=0)
    """Weight decay of the AdamW optimizer."""
    best_checkpoints: Bool = False
    """Keep the checkpoint with the best validation loss (needs n_evals > 0) instead of the last one."""
    mask_prompt_labels: Bool = False
    """Leave prompt tokens out of the loss, so only answer tokens are learned."""
    lora: LoraSpec = Field(default_factory=LoraSpec)
    """LoRA settings."""
    evaluation_epochs: Int | None = Field(None, ge=0, le=20)
    """Not in the documented field list, but used by the docs' example body: evaluate every k epochs, read as
    n_evals = n_epochs // k (0 = no evaluation). Accepted with a warning."""
    warmup_epochs: Float | None = Field(None, ge=0, le=20)
    """Not in the documented field list, but used by the docs' example body: warm up for w epochs, read as
    warmup_ratio = min(w / n_epochs, 1). Accepted with a warning."""

    @model_validator(mode="after")
    def _apply_aliases(self, info: ValidationInfo) -> Hyperparameters:
        for field, value, _ in alias_mapping(self.n_epochs, self.evaluation_epochs, self.warmup_epochs):
            if field not in self.model_fields_set:
                self.__dict__[field] = value  # the effective value, without marking the field as given
            elif not same(getattr(self, field), value) and not (info.context or {}).get(_CHECKED):
                raise PydanticCustomError("alias_conflict", "{msg}", {"msg": conflict_message(field, self)})
        return self


# the documented hyperparameters that hold a plain value (not the lora section, not the aliases), in field order
HYPERPARAMETER_FIELDS = tuple(
    n for n in Hyperparameters.model_fields if n not in ("lora", "evaluation_epochs", "warmup_epochs")
)


class LocalSettings(_Section):
    seed: Int = Field(42, ge=0, le=2**32 - 1)
    """Random seed for data order, LoRA initialisation, dropout and the held-out validation rows."""
    max_seq_length: Int | None = Field(None, ge=8)
    """Longest tokenised row; longer rows are truncated (and counted in the job log). null = min(the model's
    context length, 2048)."""
    micro_batch_size: Int | None = Field(None, ge=1, le=64)
    """Rows per forward pass. null = batch_size. A smaller value must divide batch_size: gradient accumulation
    keeps the effective batch at batch_size while using less memory."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Training precision. auto = bf16 on GPUs that support it (else fp16), fp32 on Apple MPS, and on CPU bf16
    only where it is measured faster than fp32. fp16 cannot train on CPU."""
    batching: Literal["auto", "padding_free", "padded"] = "auto"
    """How rows share a micro-batch: padding_free packs them into one sequence that attention keeps apart (no
    compute on padding); padded pads each micro-batch to its longest row (length-grouped). auto = padding_free
    only with FlashAttention-2 (varlen kernels), else padded: see ftkit.train.plan.auto_batching."""
    logging_steps: Int = Field(1, ge=1)
    """Record the training loss every this many optimizer steps."""
    output_dir: str = Field("runs", min_length=1)
    """Folder that holds one sub-folder per job (relative to the current folder)."""
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    """Where to train. auto = CUDA, else Apple MPS, else CPU."""
    distributed: Literal["ddp", "fsdp"] = "ddp"
    """How several processes (torchrun / accelerate launch) share the work: ddp keeps a whole copy of the model on
    each; fsdp shards the weights, gradients and optimizer state across them (FSDP2), for models one device cannot
    hold. One process trains alone either way."""
    quantization: Literal["none", "4bit", "8bit"] = "none"
    """Load the frozen base model quantised by bitsandbytes (QLoRA: 4bit NF4, or 8bit) so a big model fits a small
    GPU; the LoRA adapters train in full precision. Needs lora.enabled and the qlora extra (pip install
    'ftkit[qlora]'). A merged export merges into the unquantised base."""
    validation_file: str | None = Field(None, min_length=1)
    """A validation CSV (relative to the job file's folder). It overrides a validation.csv in the dataset
    folder. Without any validation file, 1% of the training rows (at least one) are held out, as the service
    did."""
    trust_remote_code: Bool = False
    """Allow a hub or local model to run its own Python code when loaded (only for models you trust)."""
    max_steps: Int | None = Field(None, ge=1)
    """At most this many optimizer steps (for quick trial runs): training ends after n_epochs or max_steps
    steps, whichever comes first. null = n_epochs full passes."""
    max_train_rows: Int | None = Field(None, ge=1)
    """Use only the first N training rows (for quick trial runs). null = all."""
    torch_compile: Bool = False
    """Compile the model with torch.compile (faster steps on recent GPUs after a slow first step)."""
    save_steps: Int | None = Field(None, ge=1)
    """Write a resumable checkpoint every this many optimizer steps. null = about ten per run."""
    trainable_layers: Int | None = Field(None, ge=1)
    """Train only the last N transformer layers: their LoRA adapters, or with lora.enabled false their weights (and
    the final norm). The layers below stay frozen and backpropagation stops above them, so a step costs less (the
    bundled model with 8 of its 30 layers: about 2.4x faster steps on a CPU). null = every layer."""
    labels: list[str] | None = Field(
        None, json_schema_extra={"allowed": "a list of at least two distinct words, [] (off), or null (auto)"}
    )
    """Decision labels for task metrics: every evaluation also scores the validation rows the way ``ftkit evaluate``
    does (the label whose first token the model rates highest right after the prompt) and records eval_accuracy,
    eval_macro_f1, eval_auc and the predicted-label shares. null = auto: yes/no/maybe (PubMedQA) when every
    validation row carries one of them in its label column or as its answer's first word; [] = off."""
    label_column: str | None = Field(None, min_length=1)
    """Column holding each row's gold label. null = final_decision when the CSV has one, else the label word each
    answer starts with."""
    label_marker: str | None = Field(None, min_length=1)
    """Text in each answer after which its label stands, for answers that reason before deciding ("<conclusion>
    Answer: yes": "Answer:"). Task metrics then generate each validation answer up to the marker and score the labels
    right after it (ftkit evaluate --method reason). null = the label is the answer's first word."""
    class_weights: Literal["none", "balanced"] = "none"
    """Loss weight of each training row by its label: balanced gives every label the same total weight (a row weighs
    rows / (labels x rows with its label)), so a rare label is not drowned by the common one and the model cannot win
    by answering the most common label everywhere. Needs labels on every training row (see local.labels)."""
    best_metric: Literal["eval_loss", "eval_accuracy", "eval_macro_f1", "eval_auc"] = "eval_loss"
    """The validation metric that picks the best checkpoint when best_checkpoints is true: eval_loss (lowest, the
    service's meaning) or a task metric (highest; needs labels, see local.labels)."""
    report_to: list[Tracker] = Field(
        default_factory=list,
        json_schema_extra={"allowed": "a list drawn from " + ", ".join(TRACKERS) + "; [] or none = no tracker"},
    )
    """Experiment trackers the Trainer reports to, with ftkit's task metrics at each evaluation, in a run named after
    the job: TensorBoard writes to <job>/tensorboard, MLflow to $MLFLOW_TRACKING_URI, else the file store
    <job>/mlruns. Their packages are optional (pip install 'ftkit[trackers]' for tensorboard and mlflow). [] or none
    = no tracker. A comma-separated string is accepted too."""

    @field_validator("report_to", mode="before")
    @classmethod
    def _split_trackers(cls, v: Any) -> Any:
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v

    @field_validator("report_to")
    @classmethod
    def _trackers(cls, v: list[str]) -> list[str]:
        dup = sorted({t for t in v if v.count(t) > 1})
        if dup:
            raise PydanticCustomError("duplicate", "lists {dup} more than once", {"dup": ", ".join(dup)})
        if NO_TRACKER in v and len(v) > 1:
            raise PydanticCustomError("tracker_none", "none means no tracker, so it cannot be listed with others")
        missing = missing_message(v)
        if missing:  # refused here, when the job is read, rather than by the Trainer after the model has loaded
            raise PydanticCustomError("tracker_missing", "{msg}", {"msg": missing})
        return [t for t in v if t != NO_TRACKER]

    @field_validator("labels")
    @classmethod
    def _label_set(cls, v: list[str] | None) -> list[str] | None:
        if not v:
            return v
        try:
            return list(check_labels(v))
        except UsageError as e:
            raise PydanticCustomError("labels", "{msg}", {"msg": str(e)}) from None


class JobSpec(_Section):
    """A fine-tuning job: the service's job body plus the optional ``local`` section."""

    name: str = Field(
        min_length=1,
        pattern=r"[A-Za-z0-9]",
        json_schema_extra={"allowed": "a non-empty string with at least one letter or digit"},
    )
    """The job's name. Locally it is also the job's id (made filesystem-safe): rerunning a name resumes it."""
    base_model_id: str = Field(
        min_length=1,
        json_schema_extra={
            "allowed": "a catalog id or name (`ftkit models`), 'bundled', a local model folder, a HF repo id"
        },
    )
    """The model to fine-tune: a catalog model's id (UUID) or name, its Hugging Face repo id, "bundled" (the
    offline SmolLM2-135M-Instruct), a local model folder, or any Hugging Face repo id."""
    dataset: DatasetSpec
    """The training data and its columns."""
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    """Training settings, as on the service."""
    local: LocalSettings = Field(default_factory=LocalSettings)
    """Settings that only exist locally (seed, memory, precision, device, output folder); optional."""

    _base_dir: Path | None = PrivateAttr(None)
    _source: str | None = PrivateAttr(None)
    _notes: list[str] = PrivateAttr(default_factory=list)
    _model: Any = PrivateAttr(None)
    _origin: dict = PrivateAttr(default_factory=dict)  # service path -> path in a demo-layout file

    @model_validator(mode="after")
    def _cross_fields(self, info: ValidationInfo) -> JobSpec:
        if (info.context or {}).get(_CHECKED):
            return self
        problems, notes, _ = cross_checks(self.dump(), self._base_dir, type(self))
        if problems:
            raise PydanticCustomError(
                "ftkit_problems", "{text}", {"text": "; ".join(map(str, problems)), "problems": problems}
            )
        self._notes = notes
        return self

    # --- reading the spec ---
    @property
    def notes(self) -> list[str]:
        """Warnings found while loading (aliases read, evaluation data held out, ...)."""
        return list(self._notes)

    @property
    def base_dir(self) -> Path:
        """The folder relative paths are read from: the job file's folder, else the current folder."""
        return self._base_dir or Path.cwd()

    @property
    def source(self) -> str | None:
        """The file the spec was loaded from, if any."""
        return self._source

    @property
    def origin(self) -> dict:
        """Service field path -> the path the user's file wrote it at (demo-client layout), for messages."""
        return dict(self._origin)

    def local_settings(self) -> LocalSettings:
        """The ``local`` section (all defaults when the job has none)."""
        return self.local

    def resolved_model(self) -> ModelInfo:
        """The :class:`~ftkit.models.catalog.ModelInfo` of ``base_model_id`` (local folders read from base_dir)."""
        if self._model is None or self._model[0] != self.base_model_id:
            self._model = (self.base_model_id, resolve_model(self.base_model_id, self.base_dir))
        return self._model[1]

    def max_seq_length(self) -> int:
        """local.max_seq_length, else min(the model's context length, 2048) (a hub model's config is read)."""
        if self.local.max_seq_length:
            return self.local.max_seq_length
        return min(self.resolved_model().context_length or 2048, 2048)

    def micro_batch_size(self) -> int:
        return self.local.micro_batch_size or self.hyperparameters.batch_size

    def gradient_accumulation_steps(self) -> int:
        return self.hyperparameters.batch_size // self.micro_batch_size()

    def dataset_files(self, base_dir: str | os.PathLike | None = None) -> DatasetFiles:
        """The training CSV and the validation CSV (or None); :class:`JobSpecError` names missing files."""
        return dataset_files(self, Path(base_dir) if base_dir is not None else self.base_dir)

    # --- writing the spec ---
    def dump(self) -> dict:
        """The body as given (fields the user set, aliases as written); ``load_job(dump())`` is the same."""
        return self.model_dump(mode="json", exclude_unset=True)

    def to_service_dict(self) -> dict:
        """The body the service would accept: :meth:`dump` without the ``local`` section."""
        return {k: v for k, v in self.dump().items() if k != "local"}

    def normalized(self, include_local: bool = True) -> dict:
        """The full body with every default filled in and aliases replaced by the fields they set."""
        out = self.model_dump(mode="json", exclude={"hyperparameters": {"evaluation_epochs", "warmup_epochs"}})
        if not include_local:
            out.pop("local")
        return out

    def with_updates(self, changes: dict) -> JobSpec:
        """A new, validated spec with ``changes`` (a nested dict, like a body) merged over this one."""
        return load_job(_merge(self.dump(), changes), base_dir=self._base_dir)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_job(source: Any, base_dir: str | os.PathLike | None = None) -> JobSpec:
    """Read and validate a job: a :class:`JobSpec`, a dict, JSON/YAML text, or a .json/.yaml/.yml file path.

    Both the service body and the demo client's YAML layout are read. Relative paths in the job are read
    from ``base_dir`` (default: the job file's folder, else the current folder). Every problem is reported at
    once in a :class:`JobSpecError`; notes (aliases read, data held out, ...) are emitted as
    :class:`JobSpecWarning` and kept in ``spec.notes``.
    """
    if isinstance(source, JobSpec):
        base_dir = base_dir if base_dir is not None else source._base_dir
        label, raw = source._source, source.dump()
    else:
        label, raw, file_dir = read_job_source(source)
        base_dir = base_dir if base_dir is not None else file_dir
    base = Path(base_dir).resolve() if base_dir is not None else None
    data, layout_problems, notes, origin = to_service_layout(raw, label)
    problems = []
    try:
        spec = JobSpec.model_validate(data, context={_CHECKED: True})
    except ValidationError as e:
        problems += translate(e, JobSpec)
    more, more_notes, model = cross_checks(data, base, JobSpec)
    problems += more
    notes += more_notes
    if problems or layout_problems:
        raise JobSpecError(layout_problems + [rename(p, origin) for p in problems], label)
    spec._base_dir, spec._source, spec._notes, spec._origin = base, label, notes, origin
    spec._model = (spec.base_model_id, model)
    for n in notes:
        warnings.warn(n, JobSpecWarning, stacklevel=2)
    return spec
