"""Every verb of the command line, once with a bad argument: a clear message and an exit code, never a traceback.

The message names what was wrong (the file, the job id, the model, the value); ``--debug`` (or ``FTKIT_DEBUG=1``)
adds the traceback for a bug report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftkit.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def files(tmp_path, monkeypatch):
    """A valid prompt/answer CSV, an invalid job, a job whose data is missing, and an empty jobs folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTKIT_JOBS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "test.csv").write_text("pmid,prompt,answer,final_decision\n1,Is it?,yes,yes\n")
    bad = {"name": "bad", "base_model_id": "bundled", "dataset": {"id": "test.csv"}, "hyperparameters": {"n_epochs": 0}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    no_data = {"name": "x", "base_model_id": "bundled", "dataset": {"id": "gone.csv", "answer_column": "answer"}}
    (tmp_path / "no-data.json").write_text(json.dumps(no_data))
    (tmp_path / "grid.yaml").write_text("grid: {learning_rate: [0.001]}\nsurprise: 1\n")
    return tmp_path


# (argv, exit code, text the message must contain); {d} is the test's folder
CASES = [
    (["demo", "--out", "{d}/test.csv/demo"], 1, "test.csv/demo"),
    (["notebooks", "run", "--only", "09"], 2, "--only '09': choose among 01_prepare_pubmedqa"),
    (["notebooks", "sweep", "{d}/grid.yaml"], 2, "expected a mapping with 'grid'"),
    (["train", "{d}/missing.json"], 1, "job file not found"),
    (["train", "{d}/bad.json"], 1, "hyperparameters.n_epochs: is too small (got 0; allowed: 1..20)"),
    (["train", "{d}/no-data.json"], 1, "dataset.id: no such file or folder"),
    (["jobs", "--status", "done"], 2, "invalid choice: 'done'"),
    (["show", "nope"], 1, "no job 'nope' in"),
    (["metrics", "nope"], 1, "no job 'nope' in"),
    (["cancel", "nope"], 1, "no job 'nope' in"),
    (["models", "--yaml"], 2, "unrecognized arguments: --yaml"),
    (["check-job", "{d}/bad.json"], 1, "2 problems in the job specification"),
    (["check-job", "{d}/no-data.json"], 1, "(use --no-files to check the body without its data files)"),
    (["prepare", "pubmedqa", "--source", "{d}/nope.json", "--out", "{d}/pq"], 1, "nope.json does not exist"),
    (["validate", "{d}/nope.csv"], 1, "file not found"),
    (["validate", "{d}/test.csv", "--model", "{d}/no-model"], 2, "no model folder"),
    (["evaluate", "no-such-model", "--data", "{d}/test.csv"], 1, "'no-such-model' is not a job folder"),
    (["score", "{d}/nope.json"], 1, "predictions file"),
    (["generate", "no-such-model", "hello"], 1, "'no-such-model' is not a job folder"),
    (["estimate", "{d}/bad.json", "--no-measure"], 1, "hyperparameters.n_epochs: is too small"),
    (["plot", "nope", "--out", "{d}/p.png"], 1, "no job 'nope' in"),
    (["export", "nope"], 1, "no job 'nope' in"),
    (["push", "nope", "--repo-id", "a/b", "--token-env", "NO_SUCH_TOKEN_VAR"], 1, "NO_SUCH_TOKEN_VAR is not set"),
    (["serve", "--port", "99999"], 2, "'99999' is not a port (allowed: 1..65535)"),  # was an internal error
]


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own usage errors (unknown option, invalid choice)
        return e.code


@pytest.mark.parametrize(("argv", "code", "message"), CASES, ids=[" ".join(c[0][:2]) for c in CASES])
def test_a_bad_argument_gets_a_message_and_an_exit_code_not_a_traceback(files, capsys, argv, code, message):
    rc = _run([a.format(d=files) for a in argv])
    out, err = capsys.readouterr()
    assert rc == code, err
    assert message in out + err, out + err
    assert "Traceback" not in out + err
    assert not (files / "runs").exists() or not list((files / "runs").iterdir())  # no half-made job folder


def test_every_verb_has_a_bad_argument_case():
    from ftkit.cli import build_parser

    verbs = set(build_parser()._subparsers._group_actions[0].choices)
    assert verbs == {argv[0] for argv, _, _ in CASES}


@pytest.mark.parametrize("job", ["missing.json", "bad.json"])
def test_train_on_a_bad_job_file_prints_the_problem_as_the_real_command_does(files, job):
    proc = subprocess.run(
        [sys.executable, "-m", "ftkit", "train", str(files / job)], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 1 and proc.stderr.startswith("ftkit: ") and "Traceback" not in proc.stderr
    assert str(files / job) in proc.stderr


def test_debug_shows_the_traceback(files):
    env = {**os.environ, "FTKIT_DEBUG": "1"}
    args = [sys.executable, "-m", "ftkit", "check-job", str(files / "bad.json")]
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr
    assert "hyperparameters.n_epochs" in proc.stderr
    flag = subprocess.run([*args[:3], "--debug", *args[3:]], capture_output=True, text=True)
    assert flag.returncode == 1 and "Traceback (most recent call last)" in flag.stderr
