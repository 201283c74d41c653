"""Experiment trackers (local.report_to): real training runs of the tiny random Llama reported to TensorBoard and
MLflow, read back with TensorBoard's event reader and MLflow's client and compared with metrics.jsonl; the default
reports nowhere; bad values are refused with the field, the value and what to do."""

from __future__ import annotations

import json
import os

import ipywidgets
import pytest

pytest.importorskip("tensorboard", reason="the trackers extra: pip install 'ftkit[trackers]'")
pytest.importorskip("mlflow", reason="the trackers extra: pip install 'ftkit[trackers]'")

from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from ftkit import JobForm  # noqa: E402
from ftkit.cli import main  # noqa: E402
from ftkit.job import trackers  # noqa: E402
from ftkit.job.problems import JobSpecError  # noqa: E402
from ftkit.job.spec import load_job  # noqa: E402
from ftkit.models.device import pick_precision  # noqa: E402
from ftkit.train.engine import train  # noqa: E402
from ftkit.train.trainer import trainer_arguments  # noqa: E402
from tests.test_train import make_spec  # noqa: E402

TRACKER_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_ALLOW_FILE_STORE",
    "TENSORBOARD_LOGGING_DIR",
    "WANDB_DIR",
)


@pytest.fixture(autouse=True)
def no_tracker_settings(monkeypatch):
    for name in TRACKER_ENV:
        monkeypatch.delenv(name, raising=False)


def client(uri: str) -> MlflowClient:
    """A reader of MLflow's file store (MLflow 3 opens one only with MLFLOW_ALLOW_FILE_STORE=true)."""
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # the autouse fixture removes it after the test
    return MlflowClient(tracking_uri=uri)


def tracked_spec(tmp_path, tiny_model_dir, **local):
    # 24 rows of yes/no answers, batch 4: 6 steps, evaluations (with task metrics) after steps 3 and 6
    local = {"report_to": ["tensorboard", "mlflow"], "save_steps": 2, **local}
    return make_spec(tmp_path, tiny_model_dir, n_evals=2, local=local)


def by_step(job, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in job.metrics() if r[key] is not None}


def tensorboard_scalars(job, tag: str) -> dict[int, float]:
    events = EventAccumulator(str(job.path / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars(tag)]
    assert len(steps) == len(set(steps)), f"{tag} logged twice at a step: {steps}"
    return {e.step: e.value for e in events.Scalars(tag)}


def mlflow_metric(job, key: str) -> dict[int, float]:
    """The last value MLflow holds at each step (a resume re-logs the steps after its checkpoint)."""
    where = job.record["trackers"]["mlflow"]
    history = client(where["tracking_uri"]).get_metric_history(where["run_id"], key)
    return {m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}


def assert_same(tracked: dict, expected: dict) -> None:
    assert sorted(tracked) == sorted(expected)
    assert tracked == {k: pytest.approx(v, rel=1e-6) for k, v in expected.items()}


def test_tensorboard_and_mlflow_runs_hold_the_losses_and_task_metrics_of_metrics_jsonl(tmp_path, tiny_model_dir):
    job = train(tracked_spec(tmp_path, tiny_model_dir), quiet=True)
    assert not any(name in os.environ for name in TRACKER_ENV)  # the job's folders were for this run only
    train_loss, eval_loss, accuracy = (
        by_step(job, "train_loss"),
        by_step(job, "eval_loss"),
        by_step(job, "eval_accuracy"),
    )
    assert sorted(train_loss) == [1, 2, 3, 4, 5, 6] and sorted(eval_loss) == sorted(accuracy) == [3, 6]

    assert_same(tensorboard_scalars(job, "train/loss"), train_loss)
    assert_same(tensorboard_scalars(job, "eval/loss"), eval_loss)
    assert_same(tensorboard_scalars(job, "eval/accuracy"), accuracy)
    assert_same(tensorboard_scalars(job, "eval/macro_f1"), by_step(job, "eval_macro_f1"))

    where = job.record["trackers"]["mlflow"]
    assert where["tracking_uri"] == (job.path / "mlruns").resolve().as_uri()
    run = client(where["tracking_uri"]).get_run(where["run_id"])
    assert run.info.run_name == job.id and run.info.status == "FINISHED"
    assert_same(mlflow_metric(job, "loss"), train_loss)
    assert_same(mlflow_metric(job, "eval_loss"), eval_loss)
    assert_same(mlflow_metric(job, "eval_accuracy"), accuracy)
    assert_same(mlflow_metric(job, "eval_share_yes"), {s: r["eval_label_shares"]["yes"] for s, r in _evals(job)})

    log = (job.path / "job.log").read_text()
    assert f"tensorboard: logdir {job.path / 'tensorboard'}" in log and f"run_id {where['run_id']}" in log


def _evals(job):
    return [(r["step"], r) for r in job.metrics() if r["eval_loss"] is not None]


def test_a_resumed_job_goes_on_in_the_same_runs_without_the_steps_it_logged_after_its_checkpoint(
    tmp_path, tiny_model_dir
):
    spec = tracked_spec(tmp_path, tiny_model_dir)

    def fail_at_step_6(record):  # before the trackers hear of step 6; step 5 is logged after the last checkpoint
        if record["step"] == 6 and record["train_loss"] is not None:
            raise RuntimeError("power cut")

    with pytest.raises(Exception, match="power cut"):
        train(spec, quiet=True, on_record=fail_at_step_6)
    first = load_job_record(tmp_path)["trackers"]["mlflow"]
    job = train(spec, quiet=True)
    assert job.status == "completed" and "resuming at step 4" in (job.path / "job.log").read_text()
    assert job.record["trackers"]["mlflow"]["run_id"] == first["run_id"]

    train_loss = by_step(job, "train_loss")
    assert sorted(train_loss) == [1, 2, 3, 4, 5, 6]
    assert_same(tensorboard_scalars(job, "train/loss"), train_loss)  # the failed attempt's step 5 is hidden
    assert_same(tensorboard_scalars(job, "eval/loss"), by_step(job, "eval_loss"))
    assert_same(mlflow_metric(job, "loss"), train_loss)
    runs = client(first["tracking_uri"]).search_runs([first["experiment_id"]])
    assert [r.info.run_id for r in runs] == [first["run_id"]]


def load_job_record(tmp_path) -> dict:
    return json.loads((tmp_path / "runs" / "tiny" / "job.json").read_text())


def test_mlflow_tracking_uri_from_the_environment_is_honoured(tmp_path, tiny_model_dir, monkeypatch):
    store = tmp_path / "shared-mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a file store the user names is the user's opt-in
    job = train(tracked_spec(tmp_path, tiny_model_dir, report_to="mlflow", max_steps=2), quiet=True)
    assert job.record["trackers"]["mlflow"]["tracking_uri"] == store.as_uri()
    assert not (job.path / "mlruns").exists() and not (job.path / "tensorboard").exists()
    assert_same(mlflow_metric(job, "loss"), by_step(job, "train_loss"))


def test_by_default_a_job_reports_to_no_tracker_and_the_estimate_never_does(tmp_path, tiny_model_dir):
    job = train(make_spec(tmp_path, tiny_model_dir, n_evals=1, local={"max_steps": 2}), quiet=True)
    assert job.status == "completed" and "trackers" not in job.record
    assert not {"tensorboard", "mlruns", "wandb"} & {p.name for p in job.path.iterdir()}
    assert not (tmp_path / "mlruns").exists()

    spec = load_job(tracked_spec(tmp_path, tiny_model_dir))
    assert spec.local.report_to == ["tensorboard", "mlflow"]
    args = trainer_arguments(tmp_path / "t", spec, 4, 1, "cpu", pick_precision("cpu", "fp32"), "padded")
    assert args.report_to == []  # the estimate's timed steps build their arguments this way


@pytest.mark.parametrize(
    ("report_to", "message"),
    [
        (
            ["tensorbord"],
            'local.report_to[0]: is not one of the allowed values (got "tensorbord"; allowed: one of tensorboard, '
            "mlflow, wandb, trackio, none)",
        ),
        (["none", "mlflow"], "local.report_to: none means no tracker, so it cannot be listed with others"),
        (["mlflow", "mlflow"], "local.report_to: lists mlflow more than once"),
        (["wandb"], "local.report_to: wandb is not installed: pip install wandb"),
    ],
)
def test_bad_trackers_are_refused_by_check_job_with_the_field_and_what_is_allowed(
    tmp_path, tiny_model_dir, capsys, monkeypatch, report_to, message
):
    monkeypatch.setitem(trackers.TRACKERS, "wandb", (("no_such_wandb_module",), "pip install wandb"))
    body = tracked_spec(tmp_path, tiny_model_dir, report_to=report_to)
    (tmp_path / "job.json").write_text(json.dumps(body))
    assert main(["check-job", str(tmp_path / "job.json")]) == 1
    out, err = capsys.readouterr()
    assert message in err and "Traceback" not in out + err, err


def test_a_missing_tracker_package_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(trackers.TRACKERS, "mlflow", (("no_such_mlflow_module",), "pip install 'ftkit[trackers]'"))
    with pytest.raises(JobSpecError, match=r"mlflow is not installed: pip install 'ftkit\[trackers\]'"):
        load_job({"name": "j", "base_model_id": "bundled", "dataset": {"id": "x.csv", "answer_column": "a"},
                  "local": {"report_to": "tensorboard, mlflow"}})  # fmt: skip


def test_none_and_a_comma_separated_string_are_read_as_lists():
    body = {"name": "j", "base_model_id": "bundled", "dataset": {"id": "x.csv", "answer_column": "a"}}
    assert load_job({**body, "local": {"report_to": "none"}}).local.report_to == []
    assert load_job({**body, "local": {"report_to": "mlflow, tensorboard"}}).local.report_to == [
        "mlflow",
        "tensorboard",
    ]


def test_the_form_offers_the_trackers_as_tags_and_its_job_file_keeps_them(tmp_path, tiny_model_dir):
    form = JobForm(tracked_spec(tmp_path, tiny_model_dir), base_dir=tmp_path, save_path=tmp_path / "job.json")
    tags = form.widgets["local.report_to"]
    assert isinstance(tags, ipywidgets.TagsInput)
    assert list(tags.allowed_tags) == ["tensorboard", "mlflow", "wandb", "trackio"] and tags.value == [
        "tensorboard",
        "mlflow",
    ]
    tags.value = ["mlflow"]
    assert form.errors == []
    form.save_button.click()
    saved = json.loads((tmp_path / "job.json").read_text())
    assert saved["local"]["report_to"] == ["mlflow"] and load_job(tmp_path / "job.json").local.report_to == ["mlflow"]
    tags.value = []
    assert "report_to" not in form.body()["local"]  # none: the default, left out of the job file
