"""Experiment trackers during training (``local.report_to``): where each tracker's run goes, that it follows a
resume, and the numbers ftkit adds to the Trainer's logs so that they reach the same run.

The Trainer's own integration callbacks do the reporting (TensorBoardCallback, MLflowCallback, WandbCallback,
TrackioCallback: rank 0 only). ftkit points them at the job: TensorBoard event files in ``<job>/tensorboard``
(unless ``TENSORBOARD_LOGGING_DIR`` says otherwise), MLflow runs at ``MLFLOW_TRACKING_URI``, else the file store
``<job>/mlruns`` (MLflow 3 wants ``MLFLOW_ALLOW_FILE_STORE=true`` for it, set for the run), W&B files under the job
folder (unless ``WANDB_DIR``); every run is named after the job id.
"""

from __future__ import annotations

import contextlib
import math
import os
from urllib.parse import urlsplit, urlunsplit

from transformers import TrainerCallback
from transformers.integrations import INTEGRATION_TO_CALLBACK, MLflowCallback, TensorBoardCallback

# ftkit's numbers of an evaluation record that a tracker plots (eval_label_shares is spread out per label)
_EVAL_NUMBERS = ("perplexity", "eval_accuracy", "eval_macro_f1", "eval_auc")


def tracker_metrics(record: dict) -> dict:
    """The numbers ftkit adds to an evaluation's log for the trackers: perplexity, the task metrics and each
    label's share of the predictions (``eval_share_<label>``); values that are missing or not finite are left out."""
    out = {k: record[k] for k in _EVAL_NUMBERS if isinstance(record.get(k), (int, float))}
    out.update({f"eval_share_{label}": v for label, v in (record.get("eval_label_shares") or {}).items()})
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _without_password(uri: str) -> str:
    """A tracking URI without the user:password an http(s) URI may carry (never written to the job's files)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def _run_environment(job, trackers: list[str], resuming: bool) -> dict:
    """The environment variables the trackers' callbacks read, for this job (each only when the user left it unset)."""
    env = {}
    if "tensorboard" in trackers:
        env["TENSORBOARD_LOGGING_DIR"] = str(job.path / "tensorboard")
    if "wandb" in trackers:
        env["WANDB_DIR"] = str(job.path)
    if "mlflow" in trackers:
        env["MLFLOW_TRACKING_URI"] = (job.path / "mlruns").resolve().as_uri()
        if "MLFLOW_TRACKING_URI" not in os.environ:
            # ftkit's default store: MLflow 3 keeps its file store (no server, no database) behind this switch
            env["MLFLOW_ALLOW_FILE_STORE"] = "true"
        before = (job.record.get("trackers") or {}).get("mlflow") or {}
        uri = os.environ.get("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
        if resuming and before.get("run_id") and before.get("tracking_uri") == _without_password(uri):
            env["MLFLOW_RUN_ID"] = before["run_id"]  # the resumed training goes on in the same MLflow run
    return {k: v for k, v in env.items() if k not in os.environ}


def _mlflow_run_id() -> str | None:
    import mlflow

    run = mlflow.active_run()
    return None if run is None else run.info.run_id


@contextlib.contextmanager
def tracker_environment(job, trackers: list[str], resuming: bool):
    """The block (building the Trainer and training) with the trackers pointed at the job; the environment is put
    back afterwards, so a notebook's later runs are not sent to this job's folders."""
    env = _run_environment(job, trackers, resuming)
    os.environ.update(env)
    before = _mlflow_run_id() if "mlflow" in trackers else None
    try:
        yield
    except BaseException:
        # a run that stopped by an error never reaches on_train_end; left active, MLflow would refuse the next run
        if "mlflow" in trackers and _mlflow_run_id() not in (None, before):
            import mlflow

            mlflow.end_run(status="FAILED")
        raise
    finally:
        for k in env:
            os.environ.pop(k, None)  # MLflow removes MLFLOW_RUN_ID itself once it has read it


def attach_trackers(trainer, job, writer: bool, resume_step: int, echo: bool) -> None:
    """Ready the Trainer's tracker callbacks: they go last, so that they see what ftkit's callback adds to a log;
    TensorBoard hides what an interrupted run logged after the checkpoint a resume starts from (as metrics.jsonl
    drops it); and the runs are recorded in job.json and the job log."""
    handler = trainer.callback_handler
    reporters = [cb for cb in handler.callbacks if type(cb) in INTEGRATION_TO_CALLBACK.values()]
    if not reporters:
        return
    for cb in reporters:
        handler.callbacks.remove(cb)
        handler.callbacks.append(cb)
    for cb in reporters:
        if isinstance(cb, TensorBoardCallback) and writer and resume_step:
            from torch.utils.tensorboard import SummaryWriter

            cb.tb_writer = SummaryWriter(log_dir=cb.logging_dir, purge_step=resume_step + 1)
    if writer:
        trainer.add_callback(_RecordRuns(job, reporters, echo))


class _RecordRuns(TrainerCallback):
    """Once the trackers have started (their on_train_begin ran before this one): where each run is, in job.json
    (``trackers``; MLflow's run id is what a resume continues) and in the job log."""

    def __init__(self, job, reporters, echo: bool):
        self.job, self.reporters, self.echo = job, reporters, echo

    def on_train_begin(self, args, state, control, **kwargs):
        where = {}
        for cb in self.reporters:
            if isinstance(cb, TensorBoardCallback):
                where["tensorboard"] = {"logdir": str(cb.logging_dir)}
            elif isinstance(cb, MLflowCallback):
                import mlflow

                run = mlflow.active_run()
                if run is not None:
                    uri = _without_password(mlflow.get_tracking_uri())
                    info = {"tracking_uri": uri, "experiment_id": run.info.experiment_id, "run_id": run.info.run_id}
                    where["mlflow"] = info
        self.job.update(trackers=where)
        for name, info in where.items():
            self.job.log(f"{name}: {', '.join(f'{k} {v}' for k, v in info.items())}", echo=self.echo)
