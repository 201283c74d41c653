"""The local training engine: run a job spec with the transformers Trainer and peft LoRA.

``train`` opens the job (fresh start or resume, one writer under DDP), then runs the named phases over one
:class:`Run`: ``start`` (status running) → ``load_model`` (device, precision, model) → ``encode`` (rows, tokens,
schedule) → ``fit`` (the Trainer with ftkit's callback writing metrics, scheduling evaluations, keeping the best
adapter, honouring cancel) → ``save_result`` (the job's model, status completed). Every failure ends the job
``failed`` with a message that says what to change.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers.utils import is_in_notebook

from ftkit.data.encoding import Encoded, encode_rows
from ftkit.files import atomic_dir, sha256_file
from ftkit.job import store as jobstore
from ftkit.job.datacheck import check_job_data, warning_lines
from ftkit.job.datafiles import DatasetFiles
from ftkit.job.spec import JobSpec, load_job
from ftkit.models.device import Precision, pick_device, pick_precision
from ftkit.models.kernels import kernels_note
from ftkit.models.loading import ensure_pad_token, hub_options, progress_bars_wanted, save_model
from ftkit.paths import display_path
from ftkit.train.callbacks import FtkitCallback, TrainingStopped
from ftkit.train.opening import open_everywhere
from ftkit.train.plan import batching_for, eval_schedule, job_rows, max_steps_note, step_plan
from ftkit.train.reporting import attach_trackers, tracker_environment
from ftkit.train.signals import StopSignals
from ftkit.train.tasks import TaskScorer, balanced_weights, decision_task
from ftkit.train.trainer import (
    build_model,
    gathered_weights,
    make_trainer,
    trainer_arguments,
    without_trainer_chatter,
)


@dataclass
class Run:
    """One run of a job: what the phases read and what each one adds for the next."""

    spec: JobSpec
    job: jobstore.Job
    resume: str | None
    """The checkpoint folder to resume from, or None for a fresh start."""
    files: DatasetFiles
    world: int = 1
    writer: bool = True
    """Whether this process writes the job's files (rank 0)."""
    quiet: bool = False
    signals: StopSignals | None = None
    on_record: Callable[[dict], Any] | None = None
    data_warnings: tuple[str, ...] = ()
    """The data check's warnings, for the job log."""
    # set by load_model
    device: str = "cpu"
    precision: Precision | None = None
    model: Any = None
    tokenizer: Any = None
    # set by encode
    train_rows: Encoded | None = None
    validation_rows: Encoded | None = None
    micro: int = 1
    accumulation: int = 1
    total_steps: int = 0
    evaluations: tuple[int, ...] = ()
    batching: str = "padded"
    task_scorer: TaskScorer | None = None
    # set by fit
    trainer: Any = None
    callback: FtkitCallback | None = None

    def log(self, message: str) -> None:
        if self.writer:
            self.job.log(message, echo=not self.quiet)

    def update(self, **fields) -> None:
        if self.writer:
            self.job.update(**fields)


def library_versions() -> dict:
    out = {}
    for name in ("ftkit", "torch", "transformers", "peft", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# ------------------------------------------------------------------------------------------------- phases


def start(run: Run) -> None:
    """Mark the job running (pid, host, versions) and say whether it starts or resumes."""
    run.update(
        status="running",
        started_at=run.job.record.get("started_at") or jobstore.now(),
        pid=os.getpid(),
        pid_started_at=jobstore.process_start_time(),  # with the pid, tells this process from a later one
        host=socket.gethostname(),
        world_size=run.world,
        error=None,
        versions=library_versions(),
    )
    what = "resuming from " + Path(run.resume).name if run.resume else "starting"
    run.log(f"job {run.job.id}: {what} ({run.world} process{'es' if run.world > 1 else ''})")
    for line in run.data_warnings:
        run.log(line)


def load_model(run: Run) -> None:
    """Pick device and precision, and build the model the job trains (LoRA adapters or all weights)."""
    hp, local = run.spec.hyperparameters, run.spec.local_settings()
    run.device = pick_device(local.device)
    run.precision = pick_precision(run.device, local.precision)
    run.log(f"device {run.device}; precision {run.precision.name} ({run.precision.reason})")
    run.model, run.tokenizer, info, (trainable, total) = build_model(
        run.spec, run.precision, progress=show_progress_bar(run.quiet), device=run.device
    )
    source = display_path(info.source) if os.path.isabs(str(info.source)) else info.source
    run.log(f"model {info.name} from {source}; {ensure_pad_token(run.tokenizer)}")
    kernels = kernels_note(run.model)
    if kernels:
        run.log(kernels)
    quantized = f" on a {local.quantization} base (bitsandbytes)" if local.quantization != "none" else ""
    what = f"LoRA{quantized}" if hp.lora.enabled else "full fine-tuning"
    run.log(f"{what}: {trainable:,} trainable of {total:,} parameters")
    run.update(
        device=run.device,
        precision=run.precision.name,
        precision_reason=run.precision.reason,
        model={"name": info.name, "source": str(info.source), "kind": info.kind},
        parameters={"trainable": trainable, "total": total},
    )


def encode(run: Run) -> None:
    """Read and encode the rows (truncation reported), and plan steps, evaluations and batching."""
    spec, hp = run.spec, run.spec.hyperparameters
    max_len = spec.max_seq_length()
    rows = job_rows(spec, run.files)
    if rows.held_out:
        n = len(rows.validation_answers)
        run.log(f"no validation file: {n} training row(s) (1%, at least one) held out for evaluation")
    run.train_rows = encode_rows(run.tokenizer, rows.prompts, rows.answers, max_len, hp.mask_prompt_labels)
    run.validation_rows = encode_rows(
        run.tokenizer, rows.validation_prompts, rows.validation_answers, max_len, hp.mask_prompt_labels
    )
    run.log(f"train: {run.train_rows.summary()}")
    run.log(f"validation: {run.validation_rows.summary()}")
    task, why = decision_task(spec, rows)
    run.log(why)
    if task is not None:
        run.task_scorer = TaskScorer(task, run.tokenizer, rows.validation_prompts)
    if spec.local.class_weights == "balanced":  # decision_task raised if there are no labels
        weights = balanced_weights(task)
        for example, w in zip(run.train_rows.examples, weights, strict=True):
            example["weight"] = w
        per_label = {x: round(w, 3) for x, w in sorted(dict(zip(task.train_gold, weights, strict=True)).items())}
        run.log(f"class_weights balanced: loss weight per label {per_label}")

    run.micro, run.accumulation, per_epoch, run.total_steps = step_plan(spec, len(run.train_rows.examples), run.world)
    run.evaluations = tuple(eval_schedule(run.total_steps, hp.n_evals, bool(run.validation_rows.examples)))
    run.batching = batching_for(run.model, spec.local.batching)
    if spec.local.max_steps and spec.local.max_steps > per_epoch * hp.n_epochs:
        run.log(max_steps_note(spec.local.max_steps, per_epoch * hp.n_epochs, hp.n_epochs))
    run.log(
        f"{run.total_steps} optimizer steps ({per_epoch}/epoch x {hp.n_epochs}); effective batch "
        f"{hp.batch_size} = micro-batch {run.micro} x accumulation {run.accumulation} x {run.world} process(es); "
        f"evaluations after steps {list(run.evaluations) or 'none'}; batching {run.batching}; "
        f"max_seq_length {max_len}"
    )
    run.update(
        batching=run.batching,
        max_seq_length=max_len,
        rows={
            "train": len(run.train_rows.examples),
            "validation": len(run.validation_rows.examples),
            "truncated_train": len(run.train_rows.truncated_rows),
            "truncated_validation": len(run.validation_rows.truncated_rows),
        },
        progress={"step": 0, "max_steps": run.total_steps},
    )


def fit(run: Run) -> None:
    """Train with the Trainer from the start or the resume checkpoint; raises when stopped early."""
    hp, local = run.spec.hyperparameters, run.spec.local_settings()
    step = json.loads((Path(run.resume) / "trainer_state.json").read_text())["global_step"] if run.resume else 0
    if run.resume and run.writer:
        dropped = jobstore.truncate_metrics(run.job.metrics_path, step)
        run.log(f"resuming at step {step}; {dropped} metric record(s) logged after that checkpoint will be re-logged")
    args = trainer_arguments(
        run.job.path / "checkpoints",
        run.spec,
        run.micro,
        run.accumulation,
        run.device,
        run.precision,
        run.batching,
        world=run.world,
        num_train_epochs=hp.n_epochs,
        # the plan's step count (n_epochs, capped by local.max_steps), so that the run, its schedule and the
        # estimate agree; the Trainer would read max_steps alone as the length and run past n_epochs
        max_steps=run.total_steps,
        warmup_steps=math.ceil(hp.warmup_ratio * run.total_steps),
        logging_steps=local.logging_steps,
        logging_nan_inf_filter=False,  # a NaN loss must surface, not be averaged away
        save_strategy="steps",
        save_steps=local.save_steps or max(1, math.ceil(run.total_steps / 10)),
        save_total_limit=2,
        disable_tqdm=not show_progress_bar(run.quiet),  # a bar on a terminal or in a notebook only
        include_num_input_tokens_seen="non_padding",
        report_to=local.report_to,
        run_name=run.job.id,
    )
    run.callback = FtkitCallback(
        job=run.job,
        writer=run.writer,
        eval_steps=list(run.evaluations),
        signals=run.signals,
        on_record=run.on_record,
        tokenizer=run.tokenizer,
        keep_best=hp.best_checkpoints,
        task_scorer=run.task_scorer,
        best_metric=local.best_metric,
        echo=not run.quiet and not is_in_notebook(),
    )
    with tracker_environment(run.job, local.report_to, resuming=bool(run.resume)):
        run.trainer = make_trainer(
            run.model,
            run.tokenizer,
            args,
            run.batching,
            run.train_rows.examples,
            run.validation_rows.examples,
            [run.callback],
        )
        run.callback.trainer = run.trainer
        attach_trackers(run.trainer, run.job, run.writer, step, echo=not run.quiet)
        with without_trainer_chatter():
            run.trainer.train(resume_from_checkpoint=run.resume)
    run.callback.raise_if_stopped()


def save_result(run: Run) -> None:
    """The job's model: the best checkpoint (best_checkpoints) or the last one; then status completed."""
    hp, job, trainer = run.spec.hyperparameters, run.job, run.trainer
    weights = gathered_weights(trainer)  # every process takes part when FSDP shards the model
    if run.writer:
        best = job.path / "best"
        if hp.best_checkpoints and (best / "best.json").is_file():
            with atomic_dir(job.model_dir) as tmp:
                shutil.copytree(best, tmp, dirs_exist_ok=True)
            result = json.loads((best / "best.json").read_text())
            result["why"] = _why_best(result, run.job.metrics())
            run.log(f"result: best checkpoint (step {result['step']}): {result['why']}")
        else:
            with atomic_dir(job.model_dir) as tmp:
                save_model(trainer.model, tmp, weights)
                run.tokenizer.save_pretrained(tmp)
            result = {"step": trainer.state.global_step, "eval_loss": run.callback.last_eval_loss}
            run.log(f"result: last checkpoint (step {result['step']})")
        job.update(
            status="completed",
            finished_at=jobstore.now(),
            pid=None,
            result={"model_dir": "model", **result, "lora": hp.lora.enabled},
            progress={"step": trainer.state.global_step, "max_steps": run.total_steps},
        )
        run.log(f"completed: {display_path(job.model_dir)}")
    run.trainer = run.model = None
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def close_processes(run: Run) -> None:
    """Under torchrun: wait until rank 0 has recorded the result, then close the process group. Left open, its
    threads met the interpreter's exit and a process could abort (SIGABRT, "terminate called without an active
    exception") after a completed job; and a non-writer could report the job still running."""
    if run.world > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


PHASES = (start, load_model, encode, fit, save_result, close_processes)


def _why_best(best: dict, records: list[dict]) -> str:
    """Why the best checkpoint won, e.g. "highest eval_macro_f1 (0.512) of 4 evaluations; eval_loss 0.49"."""
    metric = best.get("metric", "eval_loss")
    n = sum(1 for r in records if r.get("eval_loss") is not None)
    word = "lowest" if metric == "eval_loss" else "highest"
    text = f"{word} {metric} ({best.get(metric, best.get('eval_loss')):.4f}) of {n} evaluation(s)"
    return text if metric == "eval_loss" else f"{text}; eval_loss there {best['eval_loss']:.4f}"


def show_progress_bar(quiet: bool) -> bool:
    """Progress bars only where they redraw in place (see :func:`~ftkit.models.loading.progress_bars_wanted`)."""
    return not quiet and progress_bars_wanted()


# ------------------------------------------------------------------------------------------- entry point


def _data_hashes(files: DatasetFiles) -> dict:
    return {
        name: (None if p is None else {"path": str(p), "sha256": sha256_file(p)})
        for name, p in (("train", files.train), ("validation", files.validation))
    }


def train(
    spec,
    jobs_dir: str | os.PathLike | None = None,
    fresh: bool = False,
    quiet: bool = False,
    on_record=None,
    data_report=None,
) -> jobstore.Job:
    """Run (or resume) a fine-tuning job and return its :class:`~ftkit.job.store.Job`.

    ``spec`` is a :class:`~ftkit.job.spec.JobSpec`, a dict body or a path to a JSON/YAML job file. The job's id is
    its name: running the same spec again resumes from the last checkpoint, or returns at once if it completed. A
    changed spec or changed data is refused unless ``fresh=True``. ``on_record`` is called with every metric record
    (rank 0), e.g. a live plot. The data files get ``ftkit validate``'s checks first (``data_report``: their result,
    when the caller ran them): an error raises :class:`~ftkit.job.datacheck.JobDataError` before the job folder is
    made; warnings go to the job log. ``quiet`` prints nothing but errors. Raises
    :class:`~ftkit.job.store.JobError` when the job fails or is cancelled.
    """
    spec = spec if isinstance(spec, JobSpec) else load_job(spec)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    files = spec.dataset_files()
    report = data_report if data_report is not None else check_job_data(spec, files)
    hub_options(spec.resolved_model())  # a Hub model that cannot be had offline fails here, before the job folder
    root = jobs_dir or os.environ.get("FTKIT_JOBS_DIR") or spec.local.output_dir
    job, resume = open_everywhere(spec, _data_hashes(files), root, fresh, rank, world)
    if resume == "completed":
        if rank == 0 and not quiet:
            print(f"ftkit: job {job.id!r} already completed; its result is in {display_path(job.model_dir)}")
        return job
    with StopSignals() as signals:
        run = Run(
            spec,
            job,
            resume,
            files,
            world=world,
            writer=rank == 0,
            quiet=quiet,
            signals=signals,
            on_record=on_record,
            data_warnings=tuple(warning_lines(report)),
        )
        try:
            for phase in PHASES:
                phase(run)
            return job
        except TrainingStopped as stop:
            run.update(status="cancelled", finished_at=jobstore.now(), error=None, pid=None)
            run.log(f"cancelled ({stop}); the last checkpoint is kept: run the job again to resume")
            raise jobstore.JobError(f"job {job.id!r} cancelled: {stop}") from None
        except BaseException as exc:
            msg = _failure_message(exc, spec)
            run.update(status="failed", finished_at=jobstore.now(), error=msg, pid=None)
            run.log(f"failed: {msg}")
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise jobstore.JobError(f"job {job.id!r} failed: {msg}") from exc
        finally:
            if hasattr(on_record, "close"):  # e.g. a LivePlot: draw the records since its last redraw
                on_record.close()


run_job = train  # the public name (ftkit.run_job)


def _failure_message(exc: BaseException, spec) -> str:
    text = str(exc)
    oom = isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)
    )
    if oom:
        hp, local = spec.hyperparameters, spec.local
        micro = local.micro_batch_size or hp.batch_size
        return (
            f"out of memory at batch_size={hp.batch_size} (micro-batch {micro}) and max_seq_length="
            f"{local.max_seq_length or 'auto'}: lower local.micro_batch_size (gradient accumulation keeps the "
            f"effective batch size), lower local.max_seq_length, use LoRA with a smaller r, or pick a smaller model. "
            f"({type(exc).__name__}: {text.splitlines()[0][:200] if text else ''})"
        )
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (second Ctrl-C)"
    return f"{type(exc).__name__}: {text}"
