"""Estimate a job before launching it: tokens (as training sees them, and as the service priced them),
optimizer steps, memory, and the time on this machine measured by running a few real training steps.

Rows, the 1% hold-out, encoding, truncation, the step arithmetic and the evaluation schedule are the engine's
own (``ftkit.train.plan`` and ``ftkit.data.encoding``), so the counts are exactly what ``ftkit train`` would process.
Nothing is invented: a part that cannot be computed (no tokenizer offline, no model) is listed in
``missing`` with the reason.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ftkit.data.encoding import encode_rows
from ftkit.errors import FtkitError, UsageError
from ftkit.job.problems import JobSpecWarning
from ftkit.job.spec import JobSpec, load_job
from ftkit.models.device import pick_device, pick_precision
from ftkit.models.loading import load_tokenizer
from ftkit.train.memory import GIB, Memory, memory_formula, model_shape
from ftkit.train.plan import eval_schedule, job_rows, max_steps_note, step_plan
from ftkit.train.timing import Timing


class EstimateCancelled(FtkitError):
    """The estimate's ``progress`` callback stopped it (the form's Stop button)."""


Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called between the estimate's stages and after each timed step; raising
:class:`EstimateCancelled` stops the estimate there."""


@dataclass
class Tokens:
    """Token counts of the rows training uses (chat template, EOS, truncation at max_seq_length)."""

    train: int
    train_trained: int
    """Training tokens that are prediction targets (fewer with mask_prompt_labels)."""
    validation: int
    validation_trained: int
    truncated_train: int
    """Training rows cut at max_seq_length."""
    truncated_validation: int
    longest: int
    """The longest encoded row, after truncation."""


@dataclass
class Schedule:
    """The engine's step arithmetic for one process."""

    train_rows: int
    validation_rows: int
    held_out: bool
    """True when the validation rows are 1% of the training rows (no validation file)."""
    micro_batch: int
    accumulation: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    max_steps: int | None
    """local.max_steps when it cuts the run short, else None."""
    evaluations: list[int]
    """Optimizer steps after which the validation data is evaluated."""


@dataclass(repr=False)
class Estimate:
    """What a job will process and cost on this machine; ``missing`` says what could not be estimated."""

    job: str
    model: str
    max_seq_length: int | None
    schedule: Schedule
    tokens: Tokens | None = None
    memory: Memory | None = None
    timing: Timing | None = None
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def priced_tokens(self) -> int | None:
        """The service's billing quantity: train tokens x n_epochs + validation tokens x evaluations."""
        if self.tokens is None:
            return None
        s = self.schedule
        return self.tokens.train * s.epochs + self.tokens.validation * len(s.evaluations)

    @property
    def trained_tokens(self) -> int | None:
        """Loss-target tokens over all epochs: the ``trained_tokens`` metric at the end of a full run."""
        return None if self.tokens is None else self.tokens.train_trained * self.schedule.epochs

    @property
    def seconds(self) -> float | None:
        """Estimated training + evaluation time on this machine (None when not measured)."""
        return None if self.timing is None else self.timing.total_seconds

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(priced_tokens=self.priced_tokens, trained_tokens=self.trained_tokens, seconds=self.seconds)
        if self.memory is not None:
            out["memory"]["total"] = self.memory.total
        if self.timing is not None:
            t = self.timing
            out["timing"].update(
                seconds_per_step=t.seconds_per_step,
                tokens_per_second=t.tokens_per_second,
                total_seconds=t.total_seconds,
            )
        return out

    def _lines(self) -> list[tuple[str, str]]:
        s, t, m = self.schedule, self.tokens, self.memory
        val = f"{s.validation_rows} rows" + (" (1% of training held out)" if s.held_out else "")
        rows = [
            ("model", self.model),
            ("max_seq_length", str(self.max_seq_length or "unknown")),
            ("rows", f"train {s.train_rows}, validation {val}"),
        ]
        if t is not None:
            trunc = t.truncated_train + t.truncated_validation
            rows += [
                (
                    "tokens",
                    f"train {t.train:,} ({t.train_trained:,} trained), validation {t.validation:,}; "
                    f"longest row {t.longest}" + (f"; {trunc} row(s) truncated" if trunc else ""),
                ),
                (
                    "priced tokens",
                    f"{self.priced_tokens:,} = {t.train:,} x {s.epochs} epoch(s) + {t.validation:,} "
                    f"x {len(s.evaluations)} evaluation(s)",
                ),
                ("trained tokens", f"{self.trained_tokens:,} (loss targets over {s.epochs} epoch(s))"),
            ]
        cap = f", stopped at local.max_steps={s.max_steps}" if s.max_steps else ""
        rows += [
            (
                "steps",
                f"{s.total_steps} = {s.steps_per_epoch}/epoch x {s.epochs}{cap}; micro-batch "
                f"{s.micro_batch} x accumulation {s.accumulation}",
            ),
            ("evaluations", f"after steps {s.evaluations}" if s.evaluations else "none"),
        ]
        if m is not None:
            parts = ", ".join(
                f"{k} {getattr(m, k) / GIB:.2f}" for k in ("weights", "gradients", "optimizer", "activations", "logits")
            )
            free = f"; {m.available / GIB:.1f} GiB free on {m.device}" if m.available is not None else ""
            free += f"; per process, sharded over {m.shards} (fsdp)" if m.shards > 1 else ""
            free += f"; base weights {m.quantization}" if m.quantization != "none" else ""
            rows.append(
                (
                    "memory (formula)",
                    f"{m.total / GIB:.2f} GiB ({parts}; micro-batch {m.micro_batch} x {m.seq} tokens){free}",
                )
            )
            if m.measured_peak is not None:
                rows.append(("memory (measured)", f"{m.measured_peak / GIB:.2f} GiB peak while timing steps"))
            if m.warning:
                rows.append(("WARNING", m.warning))
        if self.timing is not None:
            tm = self.timing
            rows += [
                (
                    "measured",
                    f"{tm.seconds_per_step:.2f} s/step over {tm.measured_steps} step(s) after "
                    f"{tm.warmup_steps} warm-up; {tm.tokens_per_second:,.0f} tokens/s; {tm.device}, "
                    f"{tm.precision}, {tm.batching}; model built in {tm.load_seconds:.1f} s",
                ),
            ]
            if tm.model_flops_per_second:
                rows.append(
                    (
                        "model FLOP/s",
                        f"{tm.model_flops_per_second / 1e9:,.1f} GFLOP/s "
                        f"({sum(tm.step_flops) / len(tm.step_flops) / 1e12:.2f} TFLOP a step: "
                        "matmuls on real tokens, causal attention, LM head on targets only; "
                        "ftkit.train.flops)",
                    )
                )
            rows += [
                (
                    "time estimate",
                    f"{_duration(tm.total_seconds)} (training {_duration(tm.train_seconds)} + "
                    f"evaluation {_duration(tm.eval_seconds)}; checkpoint saving not included)",
                ),
            ]
        rows += [("missing", x) for x in self.missing] + [("note", x) for x in self.notes]
        if self.timing is not None:
            rows += [("note", x) for x in self.timing.notes]
        return rows

    def __str__(self) -> str:
        width = max(len(k) for k, _ in self._lines())
        return f"estimate for job {self.job!r}\n" + "\n".join(f"  {k.ljust(width)}  {v}" for k, v in self._lines())

    __repr__ = __str__  # notebooks without HTML (and the text fallback) show the same table

    def _repr_html_(self) -> str:
        cells = []
        for k, v in self._lines():
            style = ' style="color:#b00020;font-weight:bold"' if k in ("WARNING", "missing") else ""
            cells.append(
                f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                f"<td style='text-align:left'{style}>{html.escape(v)}</td></tr>"
            )
        return f"<b>Estimate for job {html.escape(self.job)}</b><table>{''.join(cells)}</table>"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _schedule(spec, n_train: int, n_val: int, held_out: bool) -> Schedule:
    hp = spec.hyperparameters
    micro, accum, per_epoch, total = step_plan(spec, n_train)
    capped = total if total < per_epoch * hp.n_epochs else None
    return Schedule(
        train_rows=n_train,
        validation_rows=n_val,
        held_out=held_out,
        micro_batch=micro,
        accumulation=accum,
        steps_per_epoch=per_epoch,
        epochs=hp.n_epochs,
        total_steps=total,
        max_steps=capped,
        evaluations=eval_schedule(total, hp.n_evals, n_val > 0),
    )


def estimate(
    spec, measure: bool = True, steps: int = 3, progress: Progress | None = None, processes: int = 1
) -> Estimate:
    """Estimate a job (a :class:`~ftkit.job.spec.JobSpec`, a dict body or a job file) before running it.

    Counts tokens with the model's tokenizer exactly as training encodes them, computes the engine's
    optimizer steps and evaluation schedule, applies a memory formula (see ``ftkit.train.memory.Memory``)
    against the device's free memory, and with ``measure=True`` builds the real model and times ``steps``
    optimizer steps on the real data after one warm-up step, extrapolated to the whole job. Whatever cannot
    be computed (the tokenizer or model cannot be loaded, e.g. a hub model offline) is stated in ``missing``,
    never guessed. ``progress`` (see :data:`Progress`) hears each stage; it may cancel the estimate.
    ``processes``: how many the job will be launched with; under local.distributed fsdp the memory figure (per
    process) shards weights, gradients and optimizer state over them (steps and time stay those of one process).
    """
    if steps < 1:
        raise UsageError(f"steps must be at least 1, got {steps}")
    if processes < 1:
        raise UsageError(f"processes must be at least 1, got {processes}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JobSpecWarning)
        spec = spec if isinstance(spec, JobSpec) else load_job(spec)
    hp, local = spec.hyperparameters, spec.local_settings()
    info = spec.resolved_model()
    files = spec.dataset_files()
    rows = job_rows(spec, files)
    est = Estimate(
        job=spec.name,
        model=info.describe(),
        max_seq_length=None,
        schedule=_schedule(spec, len(rows.answers), len(rows.validation_answers), rows.held_out),
        notes=spec.notes,
    )
    full = est.schedule.steps_per_epoch * hp.n_epochs
    if est.schedule.max_steps:
        est.notes.append(
            f"local.max_steps={local.max_steps} stops after {local.max_steps} of {full} steps: "
            f"about {local.max_steps / full:.0%} of the training tokens are processed"
        )
    elif local.max_steps:
        est.notes.append(max_steps_note(local.max_steps, full, hp.n_epochs))
    total = 2 + (steps + 3 if measure else 0)  # tokens, memory; loading, warm-up + steps, evaluation
    report = progress or (lambda stage, done, total: None)
    report("counting tokens", 0, total)
    enc_train, enc_val, unreachable = _tokens(est, spec, info, rows)
    report("memory", 1, total)
    if unreachable is None or info.kind not in ("hub", "catalog"):
        _memory(est, spec, info, processes)
    else:
        est.missing.append(f"memory: the size of {info.name} needs its config.json, not reachable (see above)")
    if not measure:
        est.missing.append("time: not measured (measure=False / --no-measure); no time is estimated")
    elif enc_train is None:
        est.missing.append("time: no model could be loaded to time training steps, so no time is estimated")
    else:
        from ftkit.train.measure import measure_steps  # heavy: imports transformers' Trainer

        def timed(stage: str, done: int) -> None:
            report(stage, 2 + done, total)

        try:
            est.timing, peak = measure_steps(spec, enc_train, enc_val, steps, est.schedule, timed)
        except EstimateCancelled:
            raise
        except Exception as e:
            est.missing.append(
                f"time: timing training steps failed ({type(e).__name__}: {_first_line(e)}); no time is estimated"
            )
        else:
            if est.memory is not None:
                est.memory.measured_peak = peak
    report("done", total, total)
    return est


def _tokens(est: Estimate, spec, info, rows):
    """Encode the rows as training would into ``est.tokens``; returns (train, validation encodings or None, why
    the model could not be reached or None). A hub model that cannot be reached once is not asked again: each try
    waits through the hub's retries."""
    hp, local = spec.hyperparameters, spec.local_settings()
    unreachable = None
    try:
        est.max_seq_length = spec.max_seq_length()
    except Exception as e:  # a hub model's config.json cannot be read (offline)
        unreachable = _first_line(e)
        est.missing.append(
            f"max_seq_length: {info.name}'s context length is unknown ({unreachable}); set local.max_seq_length"
        )
    tokenizer = None
    if unreachable is None:
        try:
            tokenizer = load_tokenizer(info, trust_remote_code=local.trust_remote_code)
        except Exception as e:
            unreachable = _first_line(e)
    if tokenizer is None:
        est.missing.append(
            f"tokens: the tokenizer of {info.name} cannot be loaded from {_source(info)} ({unreachable}); "
            "the rows and steps are exact, token counts need the tokenizer"
        )
    elif not est.max_seq_length:
        est.missing.append("tokens: rows cannot be truncated as training would without max_seq_length")
    enc_train = enc_val = None
    if tokenizer is not None and est.max_seq_length:
        enc_train = encode_rows(tokenizer, rows.prompts, rows.answers, est.max_seq_length, hp.mask_prompt_labels)
        enc_val = encode_rows(
            tokenizer, rows.validation_prompts, rows.validation_answers, est.max_seq_length, hp.mask_prompt_labels
        )
        est.tokens = Tokens(
            train=enc_train.n_tokens,
            train_trained=enc_train.n_trained_tokens,
            validation=enc_val.n_tokens,
            validation_trained=enc_val.n_trained_tokens,
            truncated_train=len(enc_train.truncated_rows),
            truncated_validation=len(enc_val.truncated_rows),
            longest=max((len(e["input_ids"]) for e in enc_train.examples + enc_val.examples), default=0),
        )
    return enc_train, enc_val, unreachable


def _memory(est: Estimate, spec, info, processes: int = 1) -> None:
    hp, local = spec.hyperparameters, spec.local_settings()
    try:
        shape = model_shape(info, hp.lora, local.trust_remote_code, local.trainable_layers)
    except Exception as e:
        est.missing.append(
            f"memory: the config of {info.name} cannot be read from {_source(info)} "
            f"({_first_line(e)}), so its size is unknown"
        )
        return
    try:
        device = pick_device(local.device)
        precision = pick_precision(device, local.precision)
    except FtkitError as e:  # local.device names a device this machine lacks
        est.missing.append(f"memory: {e}")
        return
    seq = est.tokens.longest if est.tokens is not None else est.max_seq_length
    if not seq:
        est.missing.append("memory: neither the rows' lengths nor max_seq_length are known")
        return
    est.memory = memory_formula(
        shape,
        precision.load_dtype(hp.lora.enabled),
        precision.name,
        est.schedule.micro_batch,
        seq,
        device,
        shards=processes if local.distributed == "fsdp" else 1,
        quantization=local.quantization,
    )


def _source(info) -> str:
    return {
        "hub": f"the Hugging Face Hub ({info.hf_repo}) or its cache",
        "catalog": f"the Hugging Face Hub ({info.hf_repo}) or its cache",
    }.get(info.kind, str(info.path or info.kind))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
